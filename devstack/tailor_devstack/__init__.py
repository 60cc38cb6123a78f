"""The local stack: a real Kubernetes control plane and node (kubelet, containerd, kube-proxy,
CoreDNS), MinIO, MLflow, Prometheus and Alertmanager on one machine without a Docker engine
(see docs/local-stack.md)."""
