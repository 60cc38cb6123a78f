"""The node agent: kubelet and container runtime stand-in for machines without a container
engine. Kept import-free: the container shim lives in this package and must start fast."""
