"""The Kubernetes Gateway API (gateway.networking.k8s.io): its kinds as typed, validated objects
(`gateway`, `routes`, `reference_grant`), and their conversion into the Istio Gateway and
VirtualService forms the generators already translate (`convert`), with the status each object
gets (`status`)."""
