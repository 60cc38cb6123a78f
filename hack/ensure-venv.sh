#!/usr/bin/env bash
# Creates or updates the project's virtualenv in the cache outside the clone. Dependencies are
# reinstalled only when pyproject.toml changes; a clone in another folder only re-points the
# editable install (seconds).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
source "$here/versions.sh"
venv="$TAILOR_CACHE/venv"
extras="${TAILOR_EXTRAS:-dev,trainer}"
deps_stamp="$(cat "$repo/pyproject.toml" | sha256sum | cut -c1-16)-$extras"

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv" || { echo "error: python3 cannot create a virtualenv: apt-get install -y python3-venv" >&2; exit 1; }
  "$venv/bin/pip" install -q --upgrade pip
fi
if [[ "$(cat "$venv/.deps-stamp" 2>/dev/null)" != "$deps_stamp" ]]; then
  echo "installing Python dependencies into $venv ($extras)" >&2
  "$venv/bin/pip" install -q -e "$repo[$extras]"
  echo "$deps_stamp" >"$venv/.deps-stamp"
  echo "$repo" >"$venv/.repo-stamp"
elif [[ "$(cat "$venv/.repo-stamp" 2>/dev/null)" != "$repo" ]]; then
  "$venv/bin/pip" install -q --no-deps -e "$repo"
  echo "$repo" >"$venv/.repo-stamp"
fi
