"""istiolite: a service-mesh control plane that serves Envoy over xDS in place of istiod."""

__version__ = "0.1.0"
