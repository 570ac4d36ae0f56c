"""Admission webhooks on 15017: /validate (Istio config) and /inject (sidecars)."""
