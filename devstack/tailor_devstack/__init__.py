"""The local stack: a real Kubernetes control plane, a node agent, MinIO, MLflow, Prometheus
and Alertmanager on one machine without a container engine (see docs/local-stack.md)."""
