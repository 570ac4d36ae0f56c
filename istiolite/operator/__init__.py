"""The leader's writes to the cluster: Lease election, root ConfigMaps, the CA Secret, status."""
