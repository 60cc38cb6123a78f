# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by its callers
# Pinned versions of every binary the local stack builds. Changing a pin rebuilds only that
# binary: each lives in a directory named after its version under $TAILOR_BIN_ROOT.
KUBERNETES_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
HELM_VERSION=v3.19.0
KUBECONFORM_VERSION=v0.7.0
# kstatus (Flux's readiness rules) comes from this cli-utils release; hack/kstatus/go.mod must agree.
CLI_UTILS_VERSION=v0.37.2
# The ServiceMonitor, PrometheusRule and AlertmanagerConfig CRDs (schemas for kubeconform) come
# from this prometheus-operator Go module release.
PROMETHEUS_OPERATOR_VERSION=v0.85.0
# The node: kubelet and kube-proxy come from KUBERNETES_VERSION; the pod sandbox's static `pause`
# is compiled from that release's build/pause/linux/pause.c, whose image tag (build/pause/Makefile's
# TAG) PAUSE_VERSION must match. containerd needs Go >= 1.26.6.
PAUSE_VERSION=3.10.2
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
CNI_PLUGINS_VERSION=v1.10.0
COREDNS_VERSION=v1.15.0

TAILOR_CACHE="${TAILOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tailor}"
TAILOR_BIN_ROOT="$TAILOR_CACHE/bin"
