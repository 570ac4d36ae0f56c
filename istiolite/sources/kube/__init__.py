"""Kubernetes as a source and as the TokenReview authority (through `client` only)."""
