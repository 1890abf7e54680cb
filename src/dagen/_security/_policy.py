"""Who may call what: a :class:`Policy` says which identities (or groups of them) may
call which functions and classes. It is read from TOML: a file given to ``dagen serve
--policy``, or the ``[tool.dagen.policy]`` table of the pyproject.toml of the served
module::

    [groups]
    ocean = ["alice", "bob@uni.example.org"]     # a CN or a SAN entry

    [allow]
    "*" = ["carol"]               # every function
    anomaly = ["ocean", "dave"]   # a function
    Model = ["ocean"]             # every method of a class
    "Model.predict" = ["*"]       # every certificate the CA signed

Without a policy, every certificate the CA signed may call everything. With one, a
function no entry names can be called by nobody.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._exceptions import PolicyError
from ._identity import Identity

EVERYONE = "*"


@dataclass(frozen=True)
class Policy:
    """Which identities may call which functions (by function key, e.g. ``"anomaly"``
    or ``"Model.predict"``). Groups are already expanded to identities here."""

    allow: Mapping[str, frozenset[str]]  # function key, class name or "*" -> names
    source: str = ""  # where it was read from, for messages and logs

    @classmethod
    def from_toml(
        cls,
        table: Mapping[str, Any],
        source: str,
        functions: Iterable[str] | None = None,
    ) -> Policy:
        """Check and expand a policy table; ``functions`` (the keys of the served
        functions) lets a misspelt function or class name stop the server."""
        unknown = set(table) - {"groups", "allow"}
        if unknown:
            raise PolicyError(
                f"{source}: unknown policy key(s) {', '.join(sorted(unknown))}: "
                "a policy has [groups] and [allow]"
            )
        groups = _string_lists(table.get("groups", {}), source, "groups")
        allow = _string_lists(table.get("allow", {}), source, "allow")
        if "allow" not in table:
            raise PolicyError(f"{source}: the policy has no [allow] table, so it allows nothing")
        if functions is not None:
            keys = set(functions)
            known = keys | {k.split(".", 1)[0] for k in keys if "." in k} | {EVERYONE}
            wrong = sorted(set(allow) - known)
            if wrong:
                raise PolicyError(
                    f"{source}: [allow] names {', '.join(map(repr, wrong))}, which the served "
                    f"module does not have (it has: {', '.join(sorted(keys))})"
                )
        expanded = {
            key: frozenset(_expand(members, groups, source, f"allow.{key}"))
            for key, members in allow.items()
        }
        return cls(expanded, source)

    @classmethod
    def load(cls, path: str | Path, functions: Iterable[str] | None = None) -> Policy:
        """A policy file: its top level, or its ``[tool.dagen.policy]`` table."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as e:
            raise PolicyError(f"cannot read the policy {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"{path} is not valid TOML: {e}") from None
        table = data.get("tool", {}).get("dagen", {}).get("policy")
        if table is None:
            table = data
        return cls.from_toml(table, str(path), functions)

    def allowed(self, identity: Identity, function: str) -> bool:
        names = set(identity.names)
        if not identity.authenticated or not names:
            return False
        owner = function.split(".", 1)[0] if "." in function else None
        for key in (function, owner, EVERYONE):
            members = self.allow.get(key) if key is not None else None
            if members and (EVERYONE in members or names & members):
                return True
        return False

    def describe(self) -> str:
        return f"{self.source} ({len(self.allow)} rules)"


def find_pyproject_policy(module_file: str | None, functions: Iterable[str]) -> Policy | None:
    """The ``[tool.dagen.policy]`` of the nearest pyproject.toml above a module, if any."""
    if not module_file:
        return None
    for folder in Path(module_file).resolve().parents:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise PolicyError(f"cannot read {candidate}: {e}") from None
            table = data.get("tool", {}).get("dagen", {}).get("policy")
            if table is None:
                return None
            return Policy.from_toml(table, f"{candidate} [tool.dagen.policy]", functions)
    return None


def _string_lists(table: Any, source: str, where: str) -> dict[str, list[str]]:
    if not isinstance(table, dict):
        raise PolicyError(f"{source}: [{where}] must be a table of lists of names")
    for key, value in table.items():
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise PolicyError(
                f"{source}: {where}.{key} must be a list of names, like [\"alice\", \"ocean\"]"
            )
    return table


def _expand(
    members: list[str], groups: dict[str, list[str]], source: str, where: str,
    seen: tuple[str, ...] = (),
) -> set[str]:
    names: set[str] = set()
    for member in members:
        if member in groups:
            if member in seen:
                raise PolicyError(f"{source}: group {member!r} contains itself ({where})")
            names |= _expand(groups[member], groups, source, where, (*seen, member))
        else:
            names.add(member)
    return names
