"""The decode budget: what a message may make the receiver decode, checked on its bytes
before they are parsed.

A message's cost to decode is not its size: 8 MB of empty inner lists is 4 million
Python lists (14 s of CPU and 340 MiB). So before protobuf parses a request, a
response or a frame, a scan of its wire bytes, guided by its descriptor, counts

* the values it holds (``max_values``): its fields, each item of a list of messages
  or strings, each entry of a map, each nested message, string, bytes or number
  (unknown fields too), but not the numbers of a packed list (``list[float]``),
  which protobuf decodes in C, without a Python step per item;
* their total size (``max_value_bytes``): the bytes of strings and bytes values, and
  8 bytes for every number, those of packed lists included;
* the array headers (``max_arrays``), so that a message declaring too many arrays is
  refused before any of them is parsed or allocated,

and refuses the message with :class:`~dagen._wire.LimitExceeded` (RESOURCE_EXHAUSTED)
naming the limit as soon as a count passes it: the scan's cost is bounded by the
limits, whatever the message (~0.15 s per million values), and while any scan runs
the process's GIL switch interval is half a millisecond (not 5 ms), so that other
callers' threads are not held up. Unknown fields are skipped (nothing decodes them),
but counted. Map entries and other messages of single numbers and strings are counted
without reading their insides (one value per field at most, whatever they hold). A
message too short to exceed any limit (each value takes at least one byte of it, each
header two) is not scanned at all: tiny calls pay nothing.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._wire import (
    NDARRAY_MESSAGE,
    BadFrame,
    LimitExceeded,
    Limits,
    WireError,
    frame_deserializer,
    read_varint,
)

MAX_DEPTH = 100  # protobuf's own recursion limit
# While a scan runs, a thread waiting for the GIL gets it after this long, not after
# Python's 5 ms: a caller's tiny calls are not held up by another's large message.
SCAN_SWITCH_INTERVAL = 0.0005

# What a field is, for the scan, by its tag (number and wire type): a message, a string
# or bytes, packed numbers of each width, or one number.
_MESSAGE, _BYTES, _PACKED_VARINT, _PACKED_FIXED64, _PACKED_FIXED32, _NUMBER = range(6)
# An array's inline bytes (NDArray.data): the array's, checked against the array limits
# from its header (max_array_bytes, max_call_bytes, the server's memory), not a value's.
_ARRAY_BYTES = 6
_HIGH_BYTES = bytes(range(0x80, 0x100))  # bytes that continue a varint


# tag -> (kind, fields of a message, is an array, its values if it is flat or -1)
Fields = dict[int, tuple[int, Any, bool, int]]


class _Plan:
    """The fields of one message type, by tag."""

    __slots__ = ("fields", "is_array", "has_arrays", "subplans", "flat")

    def __init__(self, descriptor: Any) -> None:
        self.fields: Fields = {}
        self.subplans: list[_Plan] = []
        # A message of single numbers and strings (a map's entry): it decodes to at most
        # one value per field whatever its bytes hold, and is counted without reading it.
        flat = all(f.message_type is None and not f.is_repeated
                   for f in descriptor.fields)
        self.flat = len(descriptor.fields) if flat else -1
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
                plan.subplans.append(sub)
                plan.fields[f.number << 3 | 2] = (_MESSAGE, sub.fields, sub.is_array, sub.flat)
                continue
            kind, wire_type = _kind(f)
            if kind == _BYTES:
                array_bytes = plan.is_array and f.name == "data"
                plan.fields[f.number << 3 | 2] = (_ARRAY_BYTES if array_bytes else _BYTES, None,
                                                  False, -1)
                continue
            plan.fields[f.number << 3 | 2] = (kind, None, False, -1)  # packed
            plan.fields[f.number << 3 | wire_type] = (_NUMBER, None, False, -1)
        return plan

    root = make(descriptor)
    changed = True
    while changed:  # has_arrays: whether any message reachable from it is an NDArray
        changed = False
        for plan in plans.values():
            if not plan.has_arrays and any(sub.has_arrays for sub in plan.subplans):
                plan.has_arrays = changed = True
    return root


def _kind(field: Any) -> tuple[int, int]:
    """The kind of a field that is no message, and the wire type of one of its values."""
    t = field.type
    if t in (field.TYPE_STRING, field.TYPE_BYTES):
        return _BYTES, 2
    if t in (field.TYPE_DOUBLE, field.TYPE_FIXED64, field.TYPE_SFIXED64):
        return _PACKED_FIXED64, 1
    if t in (field.TYPE_FLOAT, field.TYPE_FIXED32, field.TYPE_SFIXED32):
        return _PACKED_FIXED32, 5
    return _PACKED_VARINT, 0


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
            with _responsive():
                _scan(buf, plan, limits, what)

    return check


def frame_parser(frame_cls: Any, limits: Limits, what: str) -> Callable[[bytes], Any]:
    """The parser of a stream's frames (dagen._wire.frame_deserializer) with the decode
    budget checked on each frame's bytes first."""
    return frame_deserializer(frame_cls, budget_check(frame_cls.DESCRIPTOR, limits, what))


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


def scan(buf: bytes, descriptor: Any, limits: Limits | None = None,
         what: str = "the message") -> tuple[int, int, int]:
    """Scan a serialized message whatever its length: its (values, value bytes, arrays)
    as counted against the limits (at least those its decoding makes), or raise."""
    return _scan(buf, plan_of(descriptor), limits or Limits(), what)


def _scan(buf: bytes, plan: _Plan, limits: Limits, what: str) -> tuple[int, int, int]:  # noqa: C901, PLR0912, PLR0915
    max_values, max_bytes, max_arrays = limits.max_values, limits.max_value_bytes, limits.max_arrays
    values = value_bytes = arrays = 0
    message, number, high = _MESSAGE, _NUMBER, _HIGH_BYTES  # (locals: the loop is hot)
    stack: list[tuple[Fields, int]] = []
    fields = plan.fields
    pos, end = 0, len(buf)
    try:
        while True:
            while pos < end:
                values += 1  # every field counts, known or not
                if values > max_values:
                    break
                key = buf[pos]
                pos += 1
                if key >= 0x80:
                    key, pos = read_varint(buf, pos - 1)
                spec = fields.get(key)
                if spec is None:  # an unknown field: kept as bytes, never decoded
                    pos = _skip(buf, pos, end, key)
                    continue
                kind = spec[0]
                if kind == number:
                    value_bytes += 8
                    if key & 7 == 0:
                        while buf[pos] >= 0x80:
                            pos += 1
                        pos += 1
                    else:
                        pos += 8 if key & 7 == 1 else 4
                    continue
                length = buf[pos]
                pos += 1
                if length >= 0x80:
                    length, pos = read_varint(buf, pos - 1)
                if pos + length > end:
                    raise WireError("a field runs past the end of its message")
                if kind == message:
                    if spec[2]:  # an array's header
                        arrays += 1
                        if arrays > max_arrays:
                            raise LimitExceeded(
                                f"{what} declares more than {max_arrays} arrays in one "
                                f"call (max_arrays={max_arrays})")
                    flat = spec[3]
                    if flat >= 0:  # at most one value per field, the strings within its bytes
                        pos += length
                        # and the flat messages that follow with the same one-byte tag and
                        # length (a map's entries), counted in a tighter loop
                        first, room = pos, (max_values - values) // (flat + 1)
                        n = 0
                        while n < room and pos < end and buf[pos] == key:
                            size = buf[pos + 1]
                            if size >= 0x80:
                                break
                            pos += 2 + size
                            n += 1
                        if pos > end:
                            raise WireError("a field runs past the end of its message")
                        values += flat + n * (flat + 1)
                        value_bytes += length + pos - first - 2 * n + 8 * flat * (n + 1)
                        if value_bytes > max_bytes:
                            break
                        continue
                    if length:
                        if len(stack) >= MAX_DEPTH:
                            raise WireError(f"{what} nests messages deeper than {MAX_DEPTH}")
                        stack.append((fields, end))
                        fields, end = spec[1], pos + length
                    continue
                if kind == _BYTES:
                    value_bytes += length
                elif kind == _ARRAY_BYTES:
                    pass
                else:  # packed numbers
                    if kind == _PACKED_FIXED64:
                        count = length // 8
                    elif kind == _PACKED_FIXED32:
                        count = length // 4
                    else:
                        count = len(buf[pos : pos + length].translate(None, high))
                    value_bytes += 8 * count
                pos += length
                if value_bytes > max_bytes:
                    break
            if values > max_values:
                raise LimitExceeded(
                    f"{what} holds more than {max_values} values (fields, items of lists, entries "
                    f"of maps, messages and strings: max_values={max_values})")
            if value_bytes > max_bytes:
                raise LimitExceeded(
                    f"{what} holds more than {max_bytes} bytes of values (strings, bytes and "
                    f"8 bytes per number: max_value_bytes={max_bytes})")
            if pos != end:
                raise WireError("a field runs past the end of its message")
            if not stack:
                return values, value_bytes, arrays
            fields, end = stack.pop()
    except IndexError:
        raise WireError(f"{what} is truncated") from None


def _skip(buf: bytes, pos: int, end: int, key: int) -> int:
    """The position after the value of an unknown field whose tag was ``key``."""
    wire_type = key & 7
    if wire_type == 0:
        while buf[pos] >= 0x80:
            pos += 1
        return pos + 1
    if wire_type == 1:
        return pos + 8
    if wire_type == 5:
        return pos + 4
    if wire_type == 2:  # (as _scan reads a length, inline there: its loop is hot)
        first = buf[pos]
        length, pos = (first, pos + 1) if first < 0x80 else read_varint(buf, pos)
        if pos + length > end:
            raise WireError("a field runs past the end of its message")
        return pos + length
    if wire_type == 3:
        return _skip_group(buf, pos, end, key >> 3)
    raise WireError(f"wire type {wire_type} where a field begins")


_switch_lock = threading.Lock()
_scans = 0  # scans running
_saved_interval = 0.005


@contextlib.contextmanager
def _responsive() -> Iterator[None]:
    """The GIL's switch interval at SCAN_SWITCH_INTERVAL while any scan runs."""
    global _scans, _saved_interval  # noqa: PLW0603 - one setting for the process
    with _switch_lock:
        if not _scans:
            _saved_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved_interval, SCAN_SWITCH_INTERVAL))
        _scans += 1
    try:
        yield
    finally:
        with _switch_lock:
            _scans -= 1
            if not _scans:
                sys.setswitchinterval(_saved_interval)



def _skip_group(buf: bytes, pos: int, end: int, number: int) -> int:
    """The position after the end of a group (an unknown field of old protobuf)."""
    open_groups = [number]
    while pos < end:
        key = buf[pos]
        pos += 1
        if key >= 0x80:
            key, pos = read_varint(buf, pos - 1)
        wire_type = key & 7
        if wire_type == 3:
            if len(open_groups) >= MAX_DEPTH:
                raise WireError(f"groups nested deeper than {MAX_DEPTH}")
            open_groups.append(key >> 3)
        elif wire_type == 4:
            if open_groups.pop() != key >> 3:
                raise WireError("a group ends with another group's number")
            if not open_groups:
                return pos
        else:
            pos = _skip(buf, pos, end, key)
    raise WireError("a group runs past the end of its message")
