#!/usr/bin/env bash
# Creates or updates the project's virtualenv in the cache outside the clone, with the four
# distributions installed editable: the contract (operator/contract), the operator (with the
# development tools), the trainer (trainer-image) and the local stack (devstack).
# Dependencies are reinstalled only when a pyproject.toml changes; a clone in another folder
# only re-points the editable installs (seconds).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
source "$here/versions.sh"
venv="$TAILOR_CACHE/venv"
projects=(operator/contract trainer-image devstack .)
deps_stamp="$(cd "$repo" && cat operator/contract/pyproject.toml trainer-image/pyproject.toml \
  devstack/pyproject.toml pyproject.toml | sha256sum | cut -c1-16)"
editables=()
for project in "${projects[@]}"; do
  if [[ "$project" == . ]]; then editables+=(-e "$repo[dev]"); else editables+=(-e "$repo/$project"); fi
done

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv" || { echo "error: python3 cannot create a virtualenv: apt-get install -y python3-venv" >&2; exit 1; }
  "$venv/bin/pip" install -q --upgrade pip
fi
if [[ "$(cat "$venv/.deps-stamp" 2>/dev/null)" != "$deps_stamp" ]]; then
  echo "installing Python dependencies into $venv" >&2
  "$venv/bin/pip" install -q "${editables[@]}"
  echo "$deps_stamp" >"$venv/.deps-stamp"
  echo "$repo" >"$venv/.repo-stamp"
elif [[ "$(cat "$venv/.repo-stamp" 2>/dev/null)" != "$repo" ]]; then
  "$venv/bin/pip" install -q --no-deps "${editables[@]}"
  echo "$repo" >"$venv/.repo-stamp"
fi
