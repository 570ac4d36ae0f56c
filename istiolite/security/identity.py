"""A workload identity: the SPIFFE URI `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`."""

from __future__ import annotations

from dataclasses import dataclass

_MAX_URI = 1024


@dataclass(frozen=True, slots=True, order=True)
class Identity:
    trust_domain: str
    namespace: str
    service_account: str

    @property
    def spiffe_uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.spiffe_uri

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """The identity a SPIFFE URI names; ValueError saying what is wrong otherwise."""
        if len(uri) > _MAX_URI:
            raise ValueError(f"SPIFFE URI longer than {_MAX_URI} characters")
        scheme, sep, rest = uri.partition("://")
        if scheme != "spiffe" or not sep:
            raise ValueError(f"{uri[:100]!r} is not a spiffe:// URI")
        parts = rest.split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
            raise ValueError(f"{uri[:100]!r} is not spiffe://<trust-domain>/ns/<ns>/sa/<account>")
        return cls(parts[0], parts[2], parts[4])
