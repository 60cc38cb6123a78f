#!/usr/bin/env bash
# Builds the pinned Go binaries of the local stack (Kubernetes control plane, kubectl, etcd,
# MinIO, Helm, kubeconform) from their Go modules into a versioned cache directory outside the
# clone. A binary is rebuilt only when its pin changes (the pin is part of the directory name).
#
# Kubernetes and etcd cannot be `go install`ed directly: their go.mod files replace sibling
# modules with relative paths. A throwaway wrapper module requires the release and pins every
# replaced module to its published version instead.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

command -v go >/dev/null || { echo "error: the Go toolchain is missing: install Go >= 1.26 (https://go.dev/dl) and put it on PATH" >&2; exit 1; }

export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log() { printf '[build-binaries] %s\n' "$*" >&2; }

# wrapper_build DEST_DIR MODULE VERSION "REPLACES" LDFLAGS PKG...
# REPLACES is a whitespace-separated list of module@version pairs pinned by replace directives.
wrapper_build() {
  local dest="$1" module="$2" version="$3" replaces="$4" ldflags="$5"; shift 5
  local dir="$work/$(basename "$dest")"
  mkdir -p "$dir"
  {
    echo "module tailor.dev/hack/wrapper"
    echo "go 1.26"
    echo "require $module $version"
    for r in $replaces; do echo "replace ${r%@*} => ${r%@*} ${r#*@}"; done
  } >"$dir/go.mod"
  {
    echo "//go:build tools"
    echo "package wrapper"
    echo "import ("
    for p in "$@"; do echo "  _ \"$p\""; done
    echo ")"
  } >"$dir/tools.go"
  (cd "$dir" && GOFLAGS="$GOFLAGS -mod=mod" go mod tidy >/dev/null 2>&1 || (cd "$dir" && go mod tidy))
  mkdir -p "$dest.tmp"
  (cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$dest.tmp/" "$@")
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

build_kubernetes() {
  local dest="$TAILOR_BIN_ROOT/kubernetes-$KUBERNETES_VERSION"
  [[ -x "$dest/kube-apiserver" && -x "$dest/kubectl" ]] && return 0
  log "building Kubernetes $KUBERNETES_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl); the first build takes a while"
  local staging_version="v0.${KUBERNETES_VERSION#v1.}" replaces=""
  go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging/ {print $1}' "$gomod"); do
    replaces+=" $m@$staging_version"
  done
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  wrapper_build "$dest" k8s.io/kubernetes "$KUBERNETES_VERSION" "$replaces" "$ld" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

build_etcd() {
  local dest="$TAILOR_BIN_ROOT/etcd-$ETCD_VERSION"
  [[ -x "$dest/server" || -x "$dest/etcd" ]] && { [[ -x "$dest/etcd" ]] || mv "$dest/server" "$dest/etcd"; return 0; }
  log "building etcd $ETCD_VERSION"
  local replaces=""
  for m in go.etcd.io/etcd/api/v3 go.etcd.io/etcd/client/pkg/v3 go.etcd.io/etcd/client/v3 go.etcd.io/etcd/pkg/v3; do
    replaces+=" $m@$ETCD_VERSION"
  done
  wrapper_build "$dest" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$replaces" "" go.etcd.io/etcd/server/v3
  mv "$dest/v3" "$dest/etcd" 2>/dev/null || mv "$dest/server" "$dest/etcd" 2>/dev/null || true
}

# go_install NAME DEST_SUBDIR PKG@VERSION: modules without replace directives install directly.
go_install() {
  local name="$1" dest="$TAILOR_BIN_ROOT/$2" pkg="$3"
  [[ -x "$dest/$name" ]] && return 0
  log "building $name ($pkg)"
  mkdir -p "$dest.tmp"
  GOBIN="$dest.tmp" go install -ldflags "-s -w" "$pkg"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# build_helm: `go install` plus the link-time variables Helm's own Makefile sets; without them
# `helm version` is empty and `helm template`/`lint` assume Kubernetes v1.20.
build_helm() {
  local dest="$TAILOR_BIN_ROOT/helm-$HELM_VERSION"
  [[ -x "$dest/helm" ]] && "$dest/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION" && return 0
  log "building helm ($HELM_VERSION)"
  local gomod client_go minor
  gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  client_go="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$gomod")"  # v0.<minor>.<patch>
  minor="${client_go#v0.}"; minor="${minor%%.*}"
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  mkdir -p "$dest.tmp"
  GOBIN="$dest.tmp" go install -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# build_kstatus: hack/kstatus, our own small program around cli-utils' kstatus. Cached under a
# directory named after the cli-utils pin and a hash of the program's sources, so an edit rebuilds.
build_kstatus() {
  local src="$here/kstatus"
  grep -q "sigs.k8s.io/cli-utils $CLI_UTILS_VERSION\$" "$src/go.mod" || {
    echo "error: hack/kstatus/go.mod does not require sigs.k8s.io/cli-utils $CLI_UTILS_VERSION (hack/versions.sh)" >&2; exit 1; }
  local hash
  hash="$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-12)"
  local dest="$TAILOR_BIN_ROOT/kstatus-$CLI_UTILS_VERSION-$hash"
  [[ -x "$dest/kstatus" ]] && return 0
  log "building kstatus (sigs.k8s.io/cli-utils $CLI_UTILS_VERSION)"
  mkdir -p "$dest.tmp"
  (cd "$src" && go build -ldflags "-s -w" -o "$dest.tmp/kstatus" .)
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# fetch_monitoring_crds: the Prometheus Operator CRDs the chart can render objects of, taken from
# the prometheus-operator Go module (its example/ folder), for kubeconform's offline schemas.
fetch_monitoring_crds() {
  local dest="$TAILOR_BIN_ROOT/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
  [[ -f "$dest/monitoring.coreos.com_servicemonitors.yaml" ]] && return 0
  log "fetching the Prometheus Operator CRDs ($PROMETHEUS_OPERATOR_VERSION)"
  local dir
  dir="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  mkdir -p "$dest.tmp"
  for kind in servicemonitors prometheusrules alertmanagerconfigs; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$dest.tmp/"
  done
  chmod -R u+w "$dest.tmp"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

mkdir -p "$TAILOR_BIN_ROOT"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(kubernetes etcd minio)
for t in "${targets[@]}"; do
  case "$t" in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    minio) go_install minio "minio-$MINIO_VERSION" "github.com/minio/minio@$MINIO_VERSION" ;;
    helm) build_helm ;;
    kubeconform) go_install kubeconform "kubeconform-$KUBECONFORM_VERSION" "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" ;;
    kstatus) build_kstatus ;;
    monitoring-crds) fetch_monitoring_crds ;;
    *) echo "error: unknown target $t" >&2; exit 2 ;;
  esac
done
