"""Functions the policy, hostile-input, fault and load tests call through a real server.

The functions marked (recorded) record each run in the file named by
``$DAGEN_TEST_RECORD`` (when set), so that a test can prove a refused call never ran.
"""

import os
import time

import numpy as np

import dagen


def _record(name: str) -> None:
    path = os.environ.get("DAGEN_TEST_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(f"{name}\n")


def total(a: np.ndarray, label: str = "") -> float:
    """The sum of an array (recorded)."""
    _record(f"total {label}")
    return float(a.sum())


def pair(a: np.ndarray, b: np.ndarray) -> list[float]:
    """The sums of two arrays (recorded)."""
    _record("pair")
    return [float(a.sum()), float(b.sum())]


def count(arrays: list[np.ndarray]) -> int:
    """How many arrays it was given (recorded)."""
    _record("count")
    return len(arrays)


def echo_array(a: np.ndarray) -> np.ndarray:
    """Return the array it was given."""
    return a


def zeros(nbytes: int) -> np.ndarray:
    """An array of ``nbytes`` bytes of ones, to download (recorded)."""
    _record("zeros")
    return np.ones(nbytes, np.uint8)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def whoami() -> list[str]:
    """The caller's certificate: common name, serial and alternative names."""
    who = dagen.caller()
    if who is None:
        return []
    return [who.name, who.serial_hex, *who.sans]


def whoami_array(a: np.ndarray) -> list[str]:
    """The caller's name, from a streaming call, which runs in another thread (recorded)."""
    _record("whoami_array")
    who = dagen.caller()
    return [who.name if who is not None else "", str(a.size)]


def secret() -> str:
    """Only some may call this (recorded)."""
    _record("secret")
    return "the secret"


def sleep(seconds: float) -> float:
    """Sleep, then return how long (recorded)."""
    _record("sleep")
    time.sleep(seconds)
    return seconds


class Vault:
    """A class whose methods a policy names as a whole or one by one."""

    def __init__(self, label: str) -> None:
        self.label = label

    def open(self) -> str:
        """Open it (recorded)."""
        _record("Vault.open")
        return f"opened {self.label}"

    def peek(self) -> str:
        """Peek into it."""
        return f"peeked into {self.label}"
