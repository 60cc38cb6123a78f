#!/usr/bin/env bash
# Builds Tailor's images (operator, trainer, and the node's pause) without a daemon, as OCI
# archives; the local stack imports them into its node (devstack/tailor_devstack/nodeimages.py).
#
#   hack/build-images.sh [build] [pause] [operator] [trainer]
#                                                       build (all by default), write the archives
#   hack/build-images.sh base                           build the base only; print its reference
#   hack/build-images.sh prune                          drop the image store and the archives
#
# buildah (Debian's package) builds operator/Dockerfile and trainer-image/Dockerfile unchanged
# from the repository root, on the Debian-package base of hack/base-image.sh passed as
# PYTHON_IMAGE. Its layer cache lives in the image store under $TAILOR_CACHE/images, so a second
# run with no source change reuses every layer and rewrites no archive. Each image ends as one OCI
# archive, $TAILOR_CACHE/images/tailor-NAME.oci.tar, tagged as the chart names it.
#
# RUN steps use buildah's chroot isolation: the host's network, no OCI runtime (crun 1.8 refuses
# this machine's hybrid cgroup layout) and no second runc beside the node's. The host's CA bundle
# is mounted over the image's for RUN steps only (pip trusts the system bundle; an egress proxy's
# CA may be in it); it is never committed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=hack/base-image.sh
source "$here/base-image.sh"

# Archive layers: zstd (the default), gzip or none. For the trainer (6.6 GB of layers) zstd wrote
# 2.9 GB in 64 s, gzip 3.3 GB in 113 s, none 6.8 GB in 52 s: none saves little time on this disk
# and doubles the archive, and buildah 1.28 cannot write it (skopeo can).
compression="${TAILOR_IMAGE_COMPRESSION:-zstd}"
host_ca=/etc/ssl/certs/ca-certificates.crt
tag="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$repo/helm/tailor/Chart.yaml")"
declare -A dockerfile_of=([operator]=operator/Dockerfile [trainer]=trainer-image/Dockerfile
  [pause]=generated)

# The pod sandbox image is the node's, not Tailor's: named as the node's containerd pins it.
ref_of() {
  if [[ $1 == pause ]]; then echo "tailor.local/pause:$PAUSE_VERSION"; else echo "ghcr.io/tailor-dev/tailor-$1:$tag"; fi
}
archive_of() { echo "$images_dir/tailor-$1.oci.tar"; }

check_names() {
  local name
  for name in "$@"; do
    [[ -n "${dockerfile_of[$name]:-}" ]] || { echo "error: unknown image '$name' (pause, operator, trainer)" >&2; exit 2; }
  done
}

# build_pause: the static pause binary (hack/build-binaries.sh pause) alone in an image.
build_pause() {
  local context="$TMPDIR/pause-context" binary="$TAILOR_BIN_ROOT/pause-$PAUSE_VERSION/pause"
  [[ -x "$binary" ]] || { echo "error: $binary is missing: run hack/build-binaries.sh pause" >&2; return 1; }
  rm -rf "$context" && mkdir -p "$context"
  cp "$binary" "$context/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$context/Containerfile"
  bh build --layers --format oci --identity-label=false --iidfile "$TMPDIR/pause.iid" \
    -t "$(ref_of pause)" "$context" >"$images_dir/build-pause.log" 2>&1 \
    || { cat "$images_dir/build-pause.log" >&2; return 1; }
}

# build_one NAME BASE: builds one image into the store (cached layers reused).
build_one() {
  [[ $1 == pause ]] && { build_pause; return; }
  local name="$1" base="$2" file="${dockerfile_of[$1]}" log="$images_dir/build-$1.log"
  local args=(build --layers --pull=never --isolation chroot --network host --format oci
    --force-rm --identity-label=false --build-arg "PYTHON_IMAGE=$base"
    --ignorefile "$repo/$file.dockerignore" -f "$repo/$file")
  [[ -f "$host_ca" ]] && args+=(--volume "$host_ca:$host_ca:ro")
  local start=$SECONDS
  images_log "building $(ref_of "$name") (log: $log)"
  bh "${args[@]}" --iidfile "$TMPDIR/$name.iid" -t "$(ref_of "$name")" "$repo" >"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; echo "error: building the $name image failed; see $log" >&2; return 1; }
  images_log "built $name in $((SECONDS - start)) s"
}

# export_one NAME: writes the image's OCI archive unless it already holds this image.
export_one() {
  local name="$1" ref archive iid start=$SECONDS
  ref="$(ref_of "$name")" archive="$(archive_of "$name")" iid="$(cat "$TMPDIR/$name.iid")"
  if [[ -f "$archive" && "$(cat "$archive.id" 2>/dev/null)" == "$iid" ]]; then
    images_log "$archive is up to date"
    return 0
  fi
  # The old archive goes first: two copies of the trainer do not fit comfortably.
  rm -f "$archive" "$archive.id" "$archive.tmp"
  case "$compression" in
    gzip | zstd)
      bh push --quiet --compression-format "$compression" "$ref" "oci-archive:$archive.tmp:$ref" >/dev/null ;;
    none)
      # buildah 1.28's push compresses even with --disable-compression for an OCI destination.
      command -v skopeo >/dev/null || { echo "error: TAILOR_IMAGE_COMPRESSION=none needs skopeo: apt-get install skopeo" >&2; return 1; }
      skopeo copy --quiet --dest-oci-accept-uncompressed-layers \
        "containers-storage:[overlay@$images_dir/storage+$images_runroot]$ref" "oci-archive:$archive.tmp:$ref" ;;
    *) echo "error: TAILOR_IMAGE_COMPRESSION must be zstd, gzip or none" >&2; return 2 ;;
  esac
  mv "$archive.tmp" "$archive"
  echo "$iid" >"$archive.id"
  images_log "wrote $archive ($(du -m "$archive" | cut -f1) MiB, $((SECONDS - start)) s)"
}

# prune_store: drops working containers and the layers no tagged image uses (an older
# dependency layer after a pyproject change, older final layers). Removing a dangling image can
# leave its parent dangling, hence the loop.
prune_store() {
  bh rm --all >/dev/null 2>&1 || true
  for _ in {1..20}; do
    [[ -n "$(bh images --quiet --filter dangling=true 2>/dev/null)" ]] || return 0
    bh rmi --prune >/dev/null 2>&1 || return 0
  done
}

build_images() {
  local names=("$@") name base
  [[ ${#names[@]} -gt 0 ]] || names=(pause operator trainer)
  check_names "${names[@]}"
  base="$(base_image)"
  for name in "${names[@]}"; do
    build_one "$name" "$base"
    export_one "$name"
  done
  prune_store
  bh images --filter reference='ghcr.io/tailor-dev/*' >&2
}

cmd="${1:-build}"
[[ $# -gt 0 ]] && shift
exec 9>"$images_dir/.lock"
flock 9
case "$cmd" in
  build) build_images "$@" ;;
  base) base_image ;;
  prune) bh rm --all >/dev/null 2>&1 || true; bh rmi --all --force >/dev/null 2>&1 || true
    rm -rf "${images_dir:?}"/tailor-*.oci.tar* "$TMPDIR" ;;
  pause | operator | trainer) build_images "$cmd" "$@" ;;
  *) echo "usage: $0 [build|base|prune] [pause] [operator] [trainer]" >&2; exit 2 ;;
esac
