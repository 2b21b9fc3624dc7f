#!/usr/bin/env bash
# A finished run as a committed member: scripts/post_member.sh RUN NAME (runs/RUN/bundle -> members/NAME, float16),
# calibrated, its config and training log copied to results/study/NAME, evaluated on val.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1; NAME=$2; M=members/$NAME
D=../shared/data/ham10000; S=splits/ham10000_seed0.csv
.venv/bin/python scripts/ship_default.py runs/$RUN/bundle --out $M
.venv/bin/dermxai calibrate --model $M --data $D --split $S
mkdir -p results/study/$NAME
cp $M/config.json results/study/$NAME/bundle_config.json
cp -r runs/$RUN/logs results/study/$NAME/
.venv/bin/dermxai evaluate --model $M --out results/study/$NAME/val --data $D --split $S --subset val
echo "POST_DONE $NAME $(date +%T)"
