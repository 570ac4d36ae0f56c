"""`istiolite proxy-status` and `istiolite proxy-config`: istioctl's views, read from a running
istiolite's /debug pages over HTTP."""
