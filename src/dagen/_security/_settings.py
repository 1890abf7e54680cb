"""The options of ``dagen serve`` that say who may call and how much a call may take:
``--policy``, ``--socket`` and the limits. See :mod:`dagen._security._policy` and
:mod:`dagen._security._limits`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from .._exceptions import PolicyError
from .._wire import Limits
from ._idle import DEFAULT_UPLOAD_IDLE_TIMEOUT
from ._limits import (
    DEFAULT_MAX_CALLS,
    DEFAULT_MAX_CALLS_PER_IDENTITY,
    CallLimits,
    default_max_memory,
    format_bytes,
    server_limits,
)
from ._policy import Policy, find_pyproject_policy

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise click.BadParameter(f"{text!r} is not a size like 64GiB, 512MiB or 1000000")
    value = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if value < 1:
        raise click.BadParameter("must be at least 1 byte")
    return value


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else parse_size(value)


_DEFAULTS = Limits()


def security_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The click options this module reads (added to every ``serve`` command)."""
    options = [
        click.option(
            "--policy",
            type=click.Path(dir_okay=False, exists=True),
            help="TOML file saying which identities may call which functions "
            "[default: [tool.dagen.policy] of the module's pyproject.toml; without one, "
            "every certificate of the CA may call everything].",
        ),
        click.option(
            "--socket",
            type=click.Path(dir_okay=False),
            help="Listen on this Unix socket file (mode 0600) instead of --host/--port; "
            "clients use the target unix:PATH.",
        ),
        click.option("--max-array-bytes", callback=_size,
                     help=f"Largest array a caller may send [default: "
                     f"{format_bytes(_DEFAULTS.max_array_bytes)}]."),
        click.option("--max-call-bytes", callback=_size,
                     help=f"Largest total of the arrays of one call [default: "
                     f"{format_bytes(_DEFAULTS.max_call_bytes)}]."),
        click.option("--max-arrays", type=click.IntRange(1), default=_DEFAULTS.max_arrays,
                     show_default=True, help="Most arrays in one call."),
        click.option("--max-ndim", type=click.IntRange(0, 64), default=_DEFAULTS.max_ndim,
                     show_default=True, help="Most dimensions of one array."),
        click.option("--max-values", type=click.IntRange(1), default=_DEFAULTS.max_values,
                     show_default=True,
                     help="Most values in one message: items of lists, entries of maps, "
                     "nested messages, strings and numbers."),
        click.option("--max-value-bytes", callback=_size,
                     help=f"Largest total of the values of one message: bytes of strings, "
                     f"8 per number [default: {format_bytes(_DEFAULTS.max_value_bytes)}]."),
        click.option("--upload-idle-timeout", type=click.FloatRange(min=0, min_open=True),
                     default=DEFAULT_UPLOAD_IDLE_TIMEOUT, show_default=True,
                     help="Seconds an upload may send nothing before it is cancelled."),
        click.option("--max-calls", type=click.IntRange(1, 10_000), default=DEFAULT_MAX_CALLS,
                     show_default=True,
                     help="Calls in progress at once; more are refused (RESOURCE_EXHAUSTED)."),
        click.option("--max-calls-per-identity", type=click.IntRange(1, 10_000),
                     default=DEFAULT_MAX_CALLS_PER_IDENTITY, show_default=True,
                     help="Calls in progress at once for one identity."),
        click.option("--max-memory", callback=_size,
                     help="Bytes the arrays received by all calls in progress may hold "
                     "[default: half this machine's memory].")
    ]
    for option in reversed(options):
        f = option(f)
    return f


@dataclass(frozen=True)
class SecuritySettings:
    limits: Limits
    call_limits: CallLimits
    policy: Policy | None
    socket: str | None
    insecure: bool = False

    def describe(self) -> str:
        lim, calls = self.limits, self.call_limits
        if self.insecure:
            who = "anyone who reaches the address (plain text: no certificates, no identities)"
        else:
            who = f"policy {self.policy.describe()}" if self.policy else "every certificate of the CA"
        return (
            f"callers: {who}; limits: max_calls={calls.max_calls}, "
            f"max_calls_per_identity={calls.max_calls_per_identity}, "
            f"max_memory={format_bytes(calls.max_memory)}, "
            f"max_array_bytes={format_bytes(lim.max_array_bytes)}, "
            f"max_call_bytes={format_bytes(lim.max_call_bytes)}, "
            f"max_arrays={lim.max_arrays}, max_ndim={lim.max_ndim}, "
            f"max_values={lim.max_values}, max_value_bytes={format_bytes(lim.max_value_bytes)}, "
            f"upload_idle_timeout={calls.upload_idle_timeout:g} s"
        )


def security_settings(
    servicer_cls: Any,
    *,
    insecure: bool,
    policy: str | None = None,
    socket: str | None = None,
    max_array_bytes: int | None = None,
    max_call_bytes: int | None = None,
    max_arrays: int | None = None,
    max_ndim: int | None = None,
    max_values: int | None = None,
    max_value_bytes: int | None = None,
    max_calls: int = DEFAULT_MAX_CALLS,
    max_calls_per_identity: int = DEFAULT_MAX_CALLS_PER_IDENTITY,
    max_memory: int | None = None,
    upload_idle_timeout: float = DEFAULT_UPLOAD_IDLE_TIMEOUT,
) -> SecuritySettings:
    """The settings the options give, checked (a ClickException says what is wrong)."""
    functions = list(servicer_cls.methods)
    try:
        if policy is not None:
            found: Policy | None = Policy.load(policy, functions)
        else:
            found = find_pyproject_policy(getattr(servicer_cls.module, "__file__", None),
                                          functions)
    except PolicyError as e:
        raise click.ClickException(str(e)) from None
    if found is not None and insecure:
        raise click.ClickException(
            f"the policy {found.source} needs mutual TLS (--certs): over plain text "
            "callers have no certificate, hence no identity"
        )
    limits = server_limits(max_array_bytes, max_call_bytes, max_arrays, max_ndim,
                           max_values, max_value_bytes)
    call_limits = CallLimits(
        max_calls=max_calls,
        max_calls_per_identity=min(max_calls_per_identity, max_calls),
        max_memory=max_memory if max_memory is not None else default_max_memory(),
        upload_idle_timeout=upload_idle_timeout,
    )
    return SecuritySettings(limits, call_limits, found, socket, insecure)
