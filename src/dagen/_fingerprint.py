"""Fingerprints: each rpc's hash of everything its messages contain.

The lock keeps, per rpc, the fingerprints of every revision still compatible with
the current one; the client sends its fingerprint with each call and the server
refuses an incompatible one with a message naming both revisions (``_handshake``).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ._layout import Contract, Rpc


def _referenced(type_text: str) -> list[str]:
    return re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", type_text.replace("map<", " ").replace(">", " "))


def _closure(contract: Contract, roots: list[str]) -> dict[str, Any]:
    messages = {m.name: m for m in contract.messages}
    enums = {e.name: e for e in contract.enums}
    seen: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name in messages:
            m = messages[name]
            seen[name] = [[f.name, f.number, f.type_text] for f in m.fields] + [m.oneof or ""]
            for f in m.fields:
                todo += _referenced(f.type)
        elif name in enums:
            seen[name] = [list(v) for v in enums[name].values]
        else:
            seen[name] = "external"  # dagen.v1.*, google.protobuf.*, scalars
    return seen


def with_fingerprints(contract: Contract) -> Contract:
    """The contract with each rpc's fingerprint, each accepting only its own."""
    rpcs = []
    for rpc in contract.rpcs:
        closure = _closure(contract, [rpc.request, rpc.response])
        canonical = json.dumps(
            [rpc.name, rpc.client_streaming, rpc.server_streaming, closure], sort_keys=True
        )
        rpcs.append(
            Rpc(
                rpc.name,
                rpc.key,
                rpc.comment,
                rpc.request,
                rpc.response,
                rpc.client_streaming,
                rpc.server_streaming,
                hashlib.sha256(canonical.encode()).hexdigest()[:16],
            )
        )
    return Contract(
        contract.package,
        contract.service,
        contract.comment,
        contract.imports,
        tuple(rpcs),
        contract.messages,
        contract.enums,
        contract.revision,
        {r.name: (r.fingerprint,) for r in rpcs},
    )

