# Pinned versions of every binary the local stack builds. Changing a pin rebuilds only that
# binary: each lives in a directory named after its version under $TAILOR_BIN_ROOT.
KUBERNETES_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
HELM_VERSION=v3.19.0
KUBECONFORM_VERSION=v0.7.0

TAILOR_CACHE="${TAILOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tailor}"
TAILOR_BIN_ROOT="$TAILOR_CACHE/bin"
