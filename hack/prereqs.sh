#!/usr/bin/env bash
# Checks (and, as root with apt, installs) the machine packages the local stack needs.
# A missing one that cannot be installed gives one line naming it and how to get it.
set -euo pipefail

declare -A package_of=(
  [prometheus]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager
  [ip]=iproute2
  [unshare]=util-linux
  [mount]=mount
  [lua5.4]=lua5.4
  [gcc]=gcc
  [pkg-config]=pkg-config
  [nft]=nftables
  [iptables]=iptables
  [buildah]=buildah
  [mmdebstrap]=mmdebstrap
)
# Build inputs with no command of their own: runc's seccomp headers, and libc6-dev (known by a
# header) for the static libc.a that pause links against.
declare -A package_of_file=(
  [/usr/include/seccomp.h]=libseccomp-dev
  [/usr/include/stdio.h]=libc6-dev
)
missing=()
for cmd in "${!package_of[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${package_of[$cmd]}")
done
for file in "${!package_of_file[@]}"; do
  [[ -e "$file" ]] || missing+=("${package_of_file[$file]}")
done
command -v python3 >/dev/null 2>&1 || { echo "error: python3 (>= 3.11) is missing: install it (apt-get install python3 python3-venv)" >&2; exit 1; }
command -v go >/dev/null 2>&1 || { echo "error: the Go toolchain (>= 1.26) is missing: install it from https://go.dev/dl and put it on PATH" >&2; exit 1; }
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "error: missing packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
