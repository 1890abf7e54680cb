"""The lock file, and the check that a rebuild does not break existing clients.

``dagen build`` writes ``<module>.dagen.lock`` next to the module's source (it belongs
in version control with it). Every later build and ``dagen serve`` number fields from
it (``_layout``). A rebuild that would break existing clients (a function or
parameter removed, a type changed, a parameter added without a default) stops with
a message naming each break, unless ``--allow-breaking`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._exceptions import ContractError
from ._layout import Contract, literal_prefix

LOCK_VERSION = 1


def lock_path_for(source: str | None, out: Path, package: str) -> Path:
    """Next to the module's source when it has one, else in the output folder."""
    if source:
        return Path(source).resolve().parent / f"{package}.dagen.lock"
    return out / f"{package}.dagen.lock"


def read_lock(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ContractError(f"{path} is not a valid lock file: {e}") from None
    if data.get("dagen_lock") != LOCK_VERSION:
        raise ContractError(f"{path} was written by another version of dagen's lock format")
    return data


def _plain(type_text: str) -> str:
    """Adding or removing presence does not change a field's encoding."""
    return type_text.removeprefix("optional ")


def _entries(messages: dict[str, dict[str, tuple[int, str]]]) -> dict[str, str]:
    """The messages that are a map's entries ({key = 1; value = 2;}), as ``map<K, V>``."""
    return {
        name: f"map<{fields['key'][1]}, {fields['value'][1]}>"
        for name, fields in messages.items()
        if fields.keys() == {"key", "value"} and (fields["key"][0], fields["value"][0]) == (1, 2)
    }


def _wire_type(type_text: str, entries: dict[str, str]) -> str:
    """A field's type as its encoding sees it: ``repeated <Entry>`` is ``map<K, V>`` (dicts
    were maps before they kept their order), and presence does not matter."""
    plain = _plain(type_text)
    element = plain.removeprefix("repeated ")
    return entries.get(element, plain) if element != plain else plain


def _literal_values(name: str, values: Any) -> dict[str, int]:
    return {k.removeprefix(literal_prefix(name)): n for k, n in dict(values).items()}


def _extends(old_type: str, new_type: str, lock: dict[str, Any], contract: Contract) -> bool:
    """Whether a field's new Literal keeps every value of its old one, with its number:
    a value added to a Literal is compatible, as one added to an enum."""
    old_type, new_type = _plain(old_type), _plain(new_type)
    label = ""
    for prefix in ("repeated ", ""):
        if old_type.startswith(prefix) and new_type.startswith(prefix):
            label = prefix
            break
    old_name, new_name = old_type.removeprefix(label), new_type.removeprefix(label)
    old = lock.get("enums", {}).get(old_name)
    new = next((e for e in contract.enums if e.name == new_name), None)
    if old is None or new is None or not (
        old_name.startswith("Literal") and new_name.startswith("Literal")
    ):
        return False
    old_values = _literal_values(old_name, old["values"])
    new_values = _literal_values(new_name, new.values)
    return all(new_values.get(k) == n for k, n in old_values.items())


def breaking_changes(lock: dict[str, Any], contract: Contract) -> list[str]:
    """What in the new contract would break clients built from the locked one."""
    problems = []
    old_entries = _entries(
        {
            name: {f: (e["number"], e["type"]) for f, e in m["fields"].items()}
            for name, m in lock.get("messages", {}).items()
        }
    )
    new_entries = _entries(
        {m.name: {f.name: (f.number, f.type_text) for f in m.fields} for m in contract.messages}
    )
    new_rpcs = {r.name: r for r in contract.rpcs}
    for name, old in lock.get("rpcs", {}).items():
        rpc = new_rpcs.get(name)
        if rpc is None:
            problems.append(f"{old['function']}() was removed (rpc {name})")
        elif (old["client_streaming"], old["server_streaming"]) != (
            rpc.client_streaming,
            rpc.server_streaming,
        ):
            problems.append(f"{old['function']}() changed how it is called (streaming or not)")
    new_messages = {m.name: m for m in contract.messages}
    for name, old in lock.get("messages", {}).items():
        message = new_messages.get(name)
        if message is None:
            continue  # its users' fields changed type, or its rpcs went: reported there
        fields = {f.name: f for f in message.fields}
        for fname, entry in old["fields"].items():
            f = fields.get(fname)
            if f is None:
                problems.append(f"{entry['what'] or fname} was removed")
            elif _wire_type(f.type_text, new_entries) != _wire_type(
                entry["type"], old_entries
            ) and not _extends(entry["type"], f.type_text, lock, contract):
                problems.append(
                    f"{entry['what'] or fname} changed type from {_plain(entry['type'])} to {_plain(f.type_text)}"
                )
        for f in message.fields:
            if f.name not in old["fields"] and f.required:
                problems.append(
                    f"{f.what or f.name} was added without a default: clients built "
                    "before cannot send it"
                )
    new_enums = {e.name: e for e in contract.enums}
    for name, old in lock.get("enums", {}).items():
        enum = new_enums.get(name)
        if enum is None:
            continue
        present = {n for n, _ in enum.values}
        for value in old["values"]:
            if value not in present:
                problems.append(f"enum {name} lost its value {value}")
    return problems


def settle(contract: Contract, lock: dict[str, Any] | None, *, allow_breaking: bool) -> Contract:
    """The contract with its revision and the fingerprints each rpc still accepts;
    raise ContractError if it breaks the locked one and that is not allowed."""
    if lock is None:
        return contract
    problems = breaking_changes(lock, contract)
    if problems and not allow_breaking:
        raise ContractError(
            "this build would break clients built from the locked contract "
            f"(revision {lock['revision']}):\n  - "
            + "\n  - ".join(problems)
            + "\nKeep the old signature (add parameters with defaults instead), or rebuild with "
            "--allow-breaking and reinstall every client."
        )
    accepted = {}
    changed = False
    for rpc in contract.rpcs:
        old = lock.get("rpcs", {}).get(rpc.name)
        history = tuple(old["accepted"]) if old else ()
        if old is None or rpc.fingerprint not in history:
            changed = True
        if problems:  # after a break, only the new revision is accepted
            history = () if old is None or old["accepted"][-1] != rpc.fingerprint else history
        accepted[rpc.name] = tuple(dict.fromkeys([*history, rpc.fingerprint]))
    changed = changed or set(lock.get("rpcs", {})) != set(accepted)
    revision = lock["revision"] + 1 if changed else lock["revision"]
    return Contract(
        contract.package,
        contract.service,
        contract.comment,
        contract.imports,
        contract.rpcs,
        contract.messages,
        contract.enums,
        revision,
        accepted,
    )


def lock_data(contract: Contract) -> dict[str, Any]:
    return {
        "dagen_lock": LOCK_VERSION,
        "package": contract.package,
        "revision": contract.revision,
        "rpcs": {
            r.name: {
                "function": r.key,
                "client_streaming": r.client_streaming,
                "server_streaming": r.server_streaming,
                "accepted": list(contract.accepted.get(r.name, (r.fingerprint,))),
            }
            for r in contract.rpcs
        },
        "messages": {
            m.name: {
                "fields": {
                    f.name: {"number": f.number, "type": f.type_text, "what": f.what}
                    for f in m.fields
                },
                "reserved": list(m.reserved),
            }
            for m in contract.messages
        },
        "enums": {
            e.name: {"values": dict(e.values), "reserved": list(e.reserved)} for e in contract.enums
        },
    }


def write_lock(path: Path, contract: Contract) -> None:
    path.write_text(json.dumps(lock_data(contract), indent=1, sort_keys=True) + "\n")
