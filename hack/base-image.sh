#!/usr/bin/env bash
# The base image of Tailor's locally built images, made from Debian packages without a daemon:
# mmdebstrap writes a minimal bookworm root filesystem with python3, python3-venv and
# ca-certificates, and buildah commits it as an OCI image into the image store under
# $TAILOR_CACHE/images. The image is tagged with a hash of its recipe (below), so a second run
# finds it and returns at once. Prints the image reference on stdout.
#
# The Dockerfiles take this reference as PYTHON_IMAGE; a user's `docker build` uses the public
# python:3.11.14-slim-bookworm instead. The recipe pins the suite, not package versions: a
# rebuild (after `hack/build-images.sh prune` or a recipe change) takes the mirror's current
# bookworm packages, security updates included.
#
# Sourced by hack/build-images.sh for the image store's settings (images_dir, bh, base_image).
set -euo pipefail

images_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$images_here/versions.sh"
BASE_IMAGE_SUITE="${BASE_IMAGE_SUITE:-bookworm}"
BASE_IMAGE_MIRROR="${BASE_IMAGE_MIRROR:-http://deb.debian.org/debian}"
BASE_IMAGE_SECURITY_MIRROR="${BASE_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

images_dir="$TAILOR_CACHE/images"
# buildah's temporary files (layer diffs, RUN cache mounts) go beside the store, not to /var/tmp.
export TMPDIR="$images_dir/tmp"
mkdir -p "$images_dir/storage" "$TMPDIR"

images_log() { printf '[images] %s\n' "$*" >&2; }

images_runroot="${XDG_RUNTIME_DIR:-/run}/tailor-buildah"

# bh ARGS...: buildah on Tailor's own image store (overlay, root), not the machine's default one.
bh() {
  buildah --root "$images_dir/storage" --runroot "$images_runroot" --storage-driver overlay "$@"
}

# The recipe: mmdebstrap's options, the suite and its sources, the image settings; its hash names
# the image.
base_options() {
  printf '%s\n' --variant=minbase \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --skip=output/dev \
    --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    '--dpkgopt=path-exclude=/usr/share/man/*' \
    '--dpkgopt=path-exclude=/usr/share/doc/*' \
    '--dpkgopt=path-include=/usr/share/doc/*/copyright' \
    '--dpkgopt=path-exclude=/usr/share/locale/*' \
    '--dpkgopt=path-exclude=/usr/share/info/*'
}
base_sources() {
  printf '%s\n' "deb $BASE_IMAGE_MIRROR $BASE_IMAGE_SUITE main" \
    "deb $BASE_IMAGE_MIRROR $BASE_IMAGE_SUITE-updates main" \
    "deb $BASE_IMAGE_SECURITY_MIRROR $BASE_IMAGE_SUITE-security main"
}
base_config() {
  # The same PATH and LANG as the public Python image.
  printf '%s\n' --env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env=LANG=C.UTF-8 '--cmd=["python3"]' \
    --label=org.opencontainers.image.title=tailor-python-base \
    "--label=org.opencontainers.image.description=Debian $BASE_IMAGE_SUITE with python3 (mmdebstrap)"
}

# base_image: builds the base unless the store has it; prints its reference.
base_image() {
  local key ref
  key="$( { base_options; echo "$BASE_IMAGE_SUITE"; base_sources; base_config; } | sha256sum | cut -c1-16)"
  ref="localhost/tailor-python-base:$key"
  if bh inspect --type image "$ref" >/dev/null 2>&1; then
    echo "$ref"
    return 0
  fi
  # Root, as the local stack: mmdebstrap's root mode and buildah's rootful store (rootless would
  # need /etc/subuid ranges).
  [[ $EUID -eq 0 ]] || { echo "error: building images needs root (sudo make images)" >&2; return 1; }
  command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap is missing: apt-get install mmdebstrap" >&2; return 1; }
  command -v buildah >/dev/null || { echo "error: buildah is missing: apt-get install buildah crun" >&2; return 1; }
  images_log "building the base image $ref (mmdebstrap $BASE_IMAGE_SUITE)"
  local rootfs="$TMPDIR/base-$key.tar" ctr options sources config start=$SECONDS
  mapfile -t options < <(base_options)
  mapfile -t sources < <(base_sources)
  mapfile -t config < <(base_config)
  # Quiet unless it fails: mmdebstrap and its merged-/usr hook are chatty.
  if ! mmdebstrap "${options[@]}" "$BASE_IMAGE_SUITE" "$rootfs" "${sources[@]}" >"$rootfs.log" 2>&1; then
    tail -n 30 "$rootfs.log" >&2
    rm -f "$rootfs" "$rootfs.log"
    return 1
  fi
  rm -f "$rootfs.log"
  ctr="$(bh from --pull=never scratch)"
  bh add --quiet "$ctr" "$rootfs" / >/dev/null
  rm -f "$rootfs"
  bh config "${config[@]}" "$ctr"
  bh commit --quiet --rm "$ctr" "$ref" >/dev/null
  images_log "built the base image in $((SECONDS - start)) s ($(bh images --format '{{.Size}}' "$ref"))"
  # Older bases (another recipe) go; their dependent cached layers go with the next prune.
  bh images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/tailor-python-base:' | grep -v ":$key$" \
    | while read -r old; do bh rmi "$old" >/dev/null 2>&1 || true; done
  echo "$ref"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  base_image
fi
