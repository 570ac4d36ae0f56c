"""A whole mesh on one Linux machine (root): pods as network namespaces with istio-init's
interception and Envoy sidecars on istiolite's secure port. `cluster.Mesh` builds it,
`bookinfo` is the demo's application, `run` is `make demo` as root, `netns` the namespace
helpers, `tokens` the local service-account token issuer."""
