#!/usr/bin/env bash
# One session-sized member: scripts/train_member.sh NAME [dermxai train options...]
# trains runs/NAME on the seed-0 split, then ships it as members/NAME (fp16), calibrated and evaluated on val
# (scripts/post_member.sh). Example: scripts/train_member.sh lite2_light_s12 --arch efficientnet_lite2 --seed 12
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=$1; shift
date +%T
.venv/bin/dermxai train --data ../shared/data/ham10000 --split splits/ham10000_seed0.csv --no-progress \
  --out "runs/$NAME" "$@" || exit 1
scripts/post_member.sh "$NAME" "$NAME"
echo "ALL_DONE $(date +%T)"
