"""Real X.509 test certificates: the demo's small CA (ECDSA P-256) serves the tests too."""

from istiolite.demo.certs import CertificateAuthority, KeyPair, tls_secret

__all__ = ["CertificateAuthority", "KeyPair", "tls_secret"]
