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

TAILOR_CACHE="${TAILOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tailor}"
TAILOR_BIN_ROOT="$TAILOR_CACHE/bin"
