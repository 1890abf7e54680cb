"""The runtime handshake: what a generated client or server embeds of its contract,
and the check that a caller's contract is one the server still serves.

The client and the server import this at run time: it imports nothing build-time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONTRACT_METADATA_KEY = "dagen-contract"


@dataclass(frozen=True)
class ContractInfo:
    """What a generated client or server embeds of its contract."""

    revision: int
    fingerprints: dict[str, str]  # rpc -> fingerprint of this build
    accepted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # rpc -> still served

    def header(self, rpc: str) -> str:
        """The metadata value a client sends: ``<revision>:<fingerprint>``."""
        return f"{self.revision}:{self.fingerprints.get(rpc, '')}"

    def served(self, rpc: str) -> frozenset[str | None]:
        """The fingerprints of clients this server serves the rpc to."""
        return frozenset(self.accepted.get(rpc, (self.fingerprints.get(rpc),)))

    def check(self, rpc: str, header: str) -> str | None:
        """None if a client's header is compatible with this server, else why not."""
        revision, _, fingerprint = header.partition(":")
        if fingerprint in self.served(rpc):
            return None
        try:
            theirs = int(revision)
        except ValueError:
            theirs = -1
        ours = self.revision
        fingerprints = (
            f"(client fingerprint {fingerprint or '?'}, server {self.fingerprints.get(rpc, '?')})"
        )
        if theirs > ours:
            return (
                f"this client is newer than the server: it was built from revision {theirs} of "
                f"the contract, but the server still runs revision {ours}, which does not have "
                f"this call as the client knows it (a parameter added since, say) {fingerprints}. "
                f"Ask the service's provider for the client of revision {ours}, or its operator "
                f"to redeploy the server from the module of revision {theirs}."
            )
        if theirs == ours:
            return (
                f"this client and the server were both built as revision {ours} of the "
                f"contract, but from different versions of it {fingerprints}: was the module "
                "built again without its lock file? Ask the service's provider for the client "
                "built with the server's lock."
            )
        return (
            f"this client was built from revision {revision} of the contract, but the server "
            f"runs revision {ours}, which changed this call incompatibly {fingerprints}. "
            "Ask the service's provider for the current client and reinstall it (the "
            "provider makes it with dagen build of the served module)."
        )
