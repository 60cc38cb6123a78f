#!/usr/bin/env bash
# Builds the pinned binaries of the local stack (Kubernetes control plane and node, kubectl, etcd,
# MinIO, Helm, kubeconform, containerd, runc, the CNI plugins, CoreDNS, the sandbox's pause) from
# their Go modules (pause: from the C file in the Kubernetes module) into a versioned cache
# directory outside the clone. A binary is rebuilt only when its pin changes (the pin is part of
# the directory name).
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
  local dir
  dir="$work/$(basename "$dest")"
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
  # Quiet when it works; rerun loudly to show why when it does not.
  if ! (cd "$dir" && GOFLAGS="$GOFLAGS -mod=mod" go mod tidy >/dev/null 2>&1); then
    (cd "$dir" && go mod tidy)
  fi
  mkdir -p "$dest.tmp"
  (cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$dest.tmp/" "$@")
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# kubernetes_build DEST PKG...: Kubernetes commands through the wrapper module, with the version
# variables its release build sets (`kubectl version`, the kubelet's node status report them).
kubernetes_build() {
  local dest="$1"; shift
  local staging_version="v0.${KUBERNETES_VERSION#v1.}" replaces=""
  go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  while read -r m; do
    replaces+=" $m@$staging_version"
  done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging/ {print $1}' "$gomod")
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  wrapper_build "$dest" k8s.io/kubernetes "$KUBERNETES_VERSION" "$replaces" "$ld" "$@"
}

build_kubernetes() {
  local dest="$TAILOR_BIN_ROOT/kubernetes-$KUBERNETES_VERSION"
  [[ -x "$dest/kube-apiserver" && -x "$dest/kubectl" ]] && return 0
  log "building Kubernetes $KUBERNETES_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl); the first build takes a while"
  kubernetes_build "$dest" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

# build_node: the kubelet and kube-proxy, in their own directory so that adding them did not
# invalidate the control plane's cache.
build_node() {
  local dest="$TAILOR_BIN_ROOT/kubernetes-node-$KUBERNETES_VERSION"
  [[ -x "$dest/kubelet" && -x "$dest/kube-proxy" ]] && return 0
  log "building the Kubernetes $KUBERNETES_VERSION node (kubelet, kube-proxy)"
  kubernetes_build "$dest" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
}

# build_pause: the pod sandbox's `pause`, a static C program shipped inside the Kubernetes module,
# compiled as its build/pause/Makefile does (the lead wraps it in the sandbox image).
build_pause() {
  local dest="$TAILOR_BIN_ROOT/pause-$PAUSE_VERSION"
  [[ -x "$dest/pause" ]] && return 0
  command -v gcc >/dev/null || { echo "error: gcc is missing (needed for pause): run hack/prereqs.sh" >&2; exit 1; }
  local dir
  dir="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  grep -qx "TAG ?= $PAUSE_VERSION" "$dir/build/pause/Makefile" || {
    echo "error: Kubernetes $KUBERNETES_VERSION's build/pause/Makefile does not have TAG $PAUSE_VERSION: update PAUSE_VERSION in hack/versions.sh" >&2; exit 1; }
  log "building pause $PAUSE_VERSION (from Kubernetes $KUBERNETES_VERSION)"
  mkdir -p "$dest.tmp"
  gcc -Os -Wall -Werror -static -s -DVERSION="v$PAUSE_VERSION" -o "$dest.tmp/pause" "$dir/build/pause/linux/pause.c"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
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

# install_all DEST "TAGS" "LDFLAGS" PKG@VERSION...: `go install` several commands into DEST.
install_all() {
  local dest="$1" tags="$2" ldflags="$3"; shift 3
  mkdir -p "$dest.tmp"
  GOBIN="$dest.tmp" go install -tags "$tags" -ldflags "-s -w $ldflags" "$@"
}

# build_containerd: containerd, ctr and the runc shim with the tags and version variables of
# containerd's Makefile (no btrfs snapshotter: it needs cgo and btrfs headers; the shim without
# gRPC, as upstream ships it). CRI reports the version to the kubelet.
build_containerd() {
  local dest="$TAILOR_BIN_ROOT/containerd-$CONTAINERD_VERSION" m=github.com/containerd/containerd/v2
  [[ -x "$dest/containerd" && -x "$dest/ctr" && -x "$dest/containerd-shim-runc-v2" ]] && return 0
  log "building containerd $CONTAINERD_VERSION (containerd, ctr, containerd-shim-runc-v2)"
  local ld="-X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Package=$m"
  install_all "$dest" "no_btrfs urfave_cli_no_docs" "$ld" \
    "$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/ctr@$CONTAINERD_VERSION"
  install_all "$dest" "no_btrfs urfave_cli_no_docs no_grpc" "$ld" \
    "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# build_runc: runc needs cgo for seccomp (Debian's libseccomp-dev); the libpathrs tag of its
# Makefile is left out (a Rust library Debian does not ship; runc falls back to its Go copy). Its
# version comes from an embedded file; the commit is unknown to a module build and left empty.
build_runc() {
  local dest="$TAILOR_BIN_ROOT/runc-$RUNC_VERSION"
  [[ -x "$dest/runc" ]] && return 0
  pkg-config --exists libseccomp 2>/dev/null || {
    echo "error: libseccomp's headers are missing (needed for runc): run hack/prereqs.sh or apt-get install libseccomp-dev" >&2; exit 1; }
  log "building runc $RUNC_VERSION"
  CGO_ENABLED=1 install_all "$dest" "seccomp urfave_cli_no_docs" "" \
    "github.com/opencontainers/runc@$RUNC_VERSION"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# build_cni: the CNI plugins the node's network uses; the directory is the kubelet's CNI bin dir.
build_cni() {
  local dest="$TAILOR_BIN_ROOT/cni-plugins-$CNI_PLUGINS_VERSION" m=github.com/containernetworking/plugins
  [[ -x "$dest/bridge" && -x "$dest/host-local" && -x "$dest/loopback" && -x "$dest/portmap" ]] && return 0
  log "building the CNI plugins $CNI_PLUGINS_VERSION (bridge, host-local, loopback, portmap)"
  install_all "$dest" "" "-X $m/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "$m/plugins/main/bridge@$CNI_PLUGINS_VERSION" "$m/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" \
    "$m/plugins/main/loopback@$CNI_PLUGINS_VERSION" "$m/plugins/meta/portmap@$CNI_PLUGINS_VERSION"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# build_coredns: CoreDNS with the plugins a cluster's DNS uses, not its default set, which links
# every cloud's SDK (default set: 79 MB, 252 s cold on 2 busy cores; this one: 55 MB, 123 s). A
# wrapper main package imports the chosen plugins and lists them in the order of the release's
# plugin.cfg, the order they run in. The list is recorded beside the binary: changing it rebuilds.
COREDNS_PLUGINS="bind ready health prometheus errors log loadbalance rewrite cache hosts kubernetes loop forward reload whoami"
build_coredns() {
  local dest="$TAILOR_BIN_ROOT/coredns-$COREDNS_VERSION" m=github.com/coredns/coredns
  [[ -x "$dest/coredns" && "$(cat "$dest/plugins" 2>/dev/null)" == "$COREDNS_PLUGINS" ]] && return 0
  log "building CoreDNS $COREDNS_VERSION ($COREDNS_PLUGINS)"
  local src dir="$work/coredns" name path directives="" imports="" p
  src="$(go mod download -json "$m@$COREDNS_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  while IFS=: read -r name path; do
    [[ " $COREDNS_PLUGINS " == *" $name "* ]] || continue
    [[ "$path" == */* ]] || path="$m/plugin/$path"
    directives+="    \"$name\","$'\n'
    imports+="  _ \"$path\""$'\n'
  done < <(grep -v '^#' "$src/plugin.cfg" | grep :)
  for p in $COREDNS_PLUGINS; do
    grep -q "^$p:" "$src/plugin.cfg" || { echo "error: CoreDNS $COREDNS_VERSION has no plugin $p" >&2; exit 1; }
  done
  mkdir -p "$dir"
  printf 'module tailor.dev/hack/coredns\ngo 1.26\nrequire %s %s\n' "$m" "$COREDNS_VERSION" >"$dir/go.mod"
  printf 'package main\n\nimport (\n  "%s/core/dnsserver"\n  "%s/coremain"\n%s)\n\nfunc main() {\n  dnsserver.Directives = []string{\n%s  }\n  coremain.Run()\n}\n' \
    "$m" "$m" "$imports" "$directives" >"$dir/main.go"
  (cd "$dir" && GOFLAGS="$GOFLAGS -mod=mod" go mod tidy)
  mkdir -p "$dest.tmp"
  (cd "$dir" && go build -ldflags "-s -w" -o "$dest.tmp/coredns" .)
  echo "$COREDNS_PLUGINS" >"$dest.tmp/plugins"
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
    node) build_node ;;
    pause) build_pause ;;
    containerd) build_containerd ;;
    runc) build_runc ;;
    cni) build_cni ;;
    coredns) build_coredns ;;
    etcd) build_etcd ;;
    minio) go_install minio "minio-$MINIO_VERSION" "github.com/minio/minio@$MINIO_VERSION" ;;
    helm) build_helm ;;
    kubeconform) go_install kubeconform "kubeconform-$KUBECONFORM_VERSION" "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" ;;
    kstatus) build_kstatus ;;
    monitoring-crds) fetch_monitoring_crds ;;
    *) echo "error: unknown target $t" >&2; exit 2 ;;
  esac
done
