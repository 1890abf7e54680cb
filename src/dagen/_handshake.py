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
        return (
            f"this client was built from revision {revision} of the contract, but the server "
            f"runs revision {self.revision}, which changed this call incompatibly "
            f"(client fingerprint {fingerprint or '?'}, server {self.fingerprints.get(rpc, '?')}). "
            "Rebuild the client from the served module (dagen build) and reinstall it."
        )
