#!/usr/bin/env bash
# A ready-to-push Streamlit Space in OUT (default: deploy/spaces itself): the Space files plus the dermxai
# wheel that requirements.txt installs (default model and example images inside the package).
# Usage: deploy/build_space.sh [OUT]    then push OUT to the Space (git lfs for the ~20 MB wheel).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$root/deploy/spaces}" && cd "${1:-$root/deploy/spaces}" && pwd)"
if [ "$out" != "$root/deploy/spaces" ]; then
    cp "$root/deploy/spaces/README.md" "$root/deploy/spaces/app.py" "$root/deploy/spaces/requirements.txt" "$out/"
fi
"${PYTHON:-python3}" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$root"
echo "$out: Space ready ($(ls "$out"))"
