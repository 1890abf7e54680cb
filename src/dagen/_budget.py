"""The decode budget: what a message may make the receiver decode, checked on its bytes
before they are parsed.

A message's cost to decode is not its size: 8 MB of empty inner lists is 4 million
Python lists (14 s of CPU and 340 MiB). So before protobuf parses a request, a
response or a frame, a scan of its wire bytes, guided by its descriptor, counts

* the values it holds (``max_values``): items of lists (packed scalars counted from
  their length, without a Python step each), entries of maps, nested messages and
  strings or bytes, and scalar fields;
* their total size (``max_value_bytes``): the bytes of strings and bytes values, and
  8 bytes for every number;
* the array headers (``max_arrays``), so that a message declaring too many arrays is
  refused before any of them is parsed or allocated,

and refuses the message with :class:`~dagen._wire.LimitExceeded` (RESOURCE_EXHAUSTED)
naming the limit as soon as a count passes it: the scan's cost is bounded by the
limits, whatever the message. Unknown fields cost only their bytes (nothing decodes
them) and are skipped. A message too short to exceed any limit (each value takes at
least one byte of it, each header two) is not scanned at all: tiny calls pay nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ._wire import BadFrame, LimitExceeded, Limits, WireError

NDARRAY_MESSAGE = "dagen.v1.NDArray"
MAX_DEPTH = 100  # protobuf's own recursion limit

# What a field is, for the scan: a message, a string or bytes, or a scalar of each width.
_MESSAGE, _BYTES, _VARINT, _FIXED64, _FIXED32 = range(5)
_HIGH_BYTES = bytes(range(0x80, 0x100))  # bytes that continue a varint


class _Plan:
    """The fields of one message type: number -> (kind, plan of a message field)."""

    __slots__ = ("fields", "is_array", "has_arrays")

    def __init__(self, descriptor: Any) -> None:
        self.fields: dict[int, tuple[int, _Plan | None]] = {}
        self.is_array = descriptor.full_name == NDARRAY_MESSAGE
        self.has_arrays = self.is_array


@functools.cache
def plan_of(descriptor: Any) -> _Plan:
    """The scan plan of a message type (made once per type, recursive types included)."""
    plans: dict[str, _Plan] = {}

    def make(d: Any) -> _Plan:
        found = plans.get(d.full_name)
        if found is not None:
            return found
        plan = plans[d.full_name] = _Plan(d)
        for f in d.fields:
            if f.message_type is not None:
                sub = make(f.message_type)
                plan.fields[f.number] = (_MESSAGE, sub)
            else:
                plan.fields[f.number] = (_kind(f), None)
        return plan

    root = make(descriptor)
    changed = True
    while changed:  # has_arrays: whether any message reachable from it is an NDArray
        changed = False
        for plan in plans.values():
            if not plan.has_arrays and any(
                sub is not None and sub.has_arrays for _, sub in plan.fields.values()
            ):
                plan.has_arrays = changed = True
    return root


def _kind(field: Any) -> int:
    t = field.type
    if t in (field.TYPE_STRING, field.TYPE_BYTES):
        return _BYTES
    if t in (field.TYPE_DOUBLE, field.TYPE_FIXED64, field.TYPE_SFIXED64):
        return _FIXED64
    if t in (field.TYPE_FLOAT, field.TYPE_FIXED32, field.TYPE_SFIXED32):
        return _FIXED32
    return _VARINT


def budget_check(descriptor: Any, limits: Limits, what: str) -> Callable[[bytes], None]:
    """A function that refuses (LimitExceeded) a serialized message of this type whose
    decoding would pass a limit, or (WireError) bytes that are no message; ``what``
    names the message in the refusal ("the request")."""
    plan = plan_of(descriptor)
    # Every value takes at least one byte of the message, every array header two: a
    # message no longer than this cannot pass a limit, and is not scanned.
    below = min(limits.max_values, limits.max_value_bytes // 8,
                2 * limits.max_arrays + 1 if plan.has_arrays else limits.max_values)

    def check(buf: bytes) -> None:
        if len(buf) > below:
            _scan(buf, plan, limits, what)

    return check


def message_deserializer(cls: Any, limits: Limits, what: str) -> Callable[[bytes], Any]:
    """A grpc deserializer of ``cls`` that checks the decode budget first; it returns a
    BadFrame for bytes refused or that do not parse (the caller raises, naming the call)."""
    check = budget_check(cls.DESCRIPTOR, limits, what)
    parse = cls.FromString

    def deserialize(buf: bytes) -> Any:
        try:
            check(buf)
            return parse(buf)
        except LimitExceeded as e:
            return BadFrame(str(e), limit=True)
        except Exception as e:  # noqa: BLE001 - any parse failure is the peer's fault
            return BadFrame(f"malformed message: {e}")

    return deserialize


def _scan(buf: bytes, plan: _Plan, limits: Limits, what: str) -> None:  # noqa: C901, PLR0912, PLR0915
    max_values, max_bytes, max_arrays = limits.max_values, limits.max_value_bytes, limits.max_arrays
    values = value_bytes = arrays = 0
    stack: list[tuple[dict[int, tuple[int, _Plan | None]], int]] = []
    fields = plan.fields
    pos, end = 0, len(buf)
    try:
        while True:
            while pos < end:
                b = buf[pos]
                pos += 1
                if b < 0x80:
                    key = b
                else:
                    key, pos = _varint(buf, pos, b)
                wire_type = key & 7
                spec = fields.get(key >> 3)
                if wire_type == 2:
                    b = buf[pos]
                    pos += 1
                    if b < 0x80:
                        length = b
                    else:
                        length, pos = _varint(buf, pos, b)
                    if pos + length > end:
                        raise WireError("a field runs past the end of its message")
                    if spec is None:
                        pos += length  # an unknown field: kept as bytes, never decoded
                        continue
                    kind, sub = spec
                    values += 1
                    if kind == _MESSAGE:
                        assert sub is not None
                        if sub.is_array:
                            arrays += 1
                            if arrays > max_arrays:
                                raise LimitExceeded(
                                    f"{what} declares more than {max_arrays} arrays in one "
                                    f"call (max_arrays={max_arrays})")
                        if values > max_values:
                            break
                        if length:
                            if len(stack) >= MAX_DEPTH:
                                raise WireError(f"{what} nests messages deeper than {MAX_DEPTH}")
                            stack.append((fields, end))
                            fields, end = sub.fields, pos + length
                        continue
                    if kind == _BYTES:
                        value_bytes += length
                    else:  # packed numbers
                        if kind == _FIXED64:
                            count = length // 8
                        elif kind == _FIXED32:
                            count = length // 4
                        else:
                            count = len(buf[pos : pos + length].translate(None, _HIGH_BYTES))
                        values += count - 1
                        value_bytes += 8 * count
                    pos += length
                elif wire_type == 0:
                    while buf[pos] & 0x80:
                        pos += 1
                    pos += 1
                    if spec is not None:
                        values += 1
                        value_bytes += 8
                elif wire_type == 1 or wire_type == 5:
                    pos += 8 if wire_type == 1 else 4
                    if spec is not None:
                        values += 1
                        value_bytes += 8
                elif wire_type == 3:
                    pos = _skip_group(buf, pos, end, key >> 3)
                else:
                    raise WireError(f"wire type {wire_type} where a field begins")
                if values > max_values or value_bytes > max_bytes:
                    break
            if values > max_values:
                raise LimitExceeded(
                    f"{what} holds more than {max_values} values (items of lists, entries of "
                    f"maps, messages, strings and numbers: max_values={max_values})")
            if value_bytes > max_bytes:
                raise LimitExceeded(
                    f"{what} holds more than {max_bytes} bytes of values (strings, bytes and "
                    f"8 bytes per number: max_value_bytes={max_bytes})")
            if pos != end:
                raise WireError("a field runs past the end of its message")
            if not stack:
                return
            fields, end = stack.pop()
    except IndexError:
        raise WireError(f"{what} is truncated") from None


def _varint(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a varint whose first byte (with its continuation bit) was ``first``."""
    result, shift = first & 0x7F, 7
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("a varint longer than 10 bytes")


def _skip_group(buf: bytes, pos: int, end: int, number: int) -> int:
    """The position after the end of a group (an unknown field of old protobuf)."""
    open_groups = [number]
    while pos < end:
        b = buf[pos]
        pos += 1
        key, pos = (b, pos) if b < 0x80 else _varint(buf, pos, b)
        wire_type = key & 7
        if wire_type == 0:
            while buf[pos] & 0x80:
                pos += 1
            pos += 1
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            b = buf[pos]
            length, pos = (b, pos + 1) if b < 0x80 else _varint(buf, pos + 1, b)
            pos += length
        elif wire_type == 3:
            if len(open_groups) >= MAX_DEPTH:
                raise WireError(f"groups nested deeper than {MAX_DEPTH}")
            open_groups.append(key >> 3)
        elif wire_type == 4:
            if open_groups.pop() != key >> 3:
                raise WireError("a group ends with another group's number")
            if not open_groups:
                return pos
        else:
            raise WireError(f"wire type {wire_type} where a field begins")
    raise WireError("a group runs past the end of its message")
