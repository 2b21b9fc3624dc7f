#!/usr/bin/env bash
# A ready-to-push Streamlit Space in OUT (default: deploy/spaces itself): the Space files plus the dermxai
# wheel that requirements.txt installs (default model and example images inside the package).
# Usage: deploy/build_space.sh [OUT]    then push OUT to the Space (git lfs for the ~75 MB wheel).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$root/deploy/spaces}" && cd "${1:-$root/deploy/spaces}" && pwd)"
if [ "$out" != "$root/deploy/spaces" ]; then
    cp "$root/deploy/spaces/README.md" "$root/deploy/spaces/app.py" "$root/deploy/spaces/requirements.txt" "$out/"
fi
# Built from a private copy of the sources: setuptools builds in the source folder, so two builds at once (or a
# stale build/ there) would collide.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp -r "$root/pyproject.toml" "$root/README.md" "$root/src" "$src/"
find "$src/src" \( -name '__pycache__' -o -name '*.egg-info' \) -prune -exec rm -rf {} +
"${PYTHON:-python3}" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$src"
echo "$out: Space ready ($(ls "$out"))"
