#!/usr/bin/env bash
# One member: Lite2, medium augmentation, seed 11, distilled from candidate v6 (runs/ens_v6a, built by
# scripts/build_int8_candidate.sh); shipped fp16, calibrated, evaluated on val.
set -uo pipefail
cd "$(dirname "$0")/.."
D=../shared/data/ham10000; S=splits/ham10000_seed0.csv; NAME=lite2_medium_distill_s11
date +%T
.venv/bin/dermxai train --data $D --split $S --arch efficientnet_lite2 --epochs 8 --seed 11 --batch-size 48 \
  --lr 0.002 --backbone-lr-scale 0.3 --class-weight-power 0.5 --label-smoothing 0.05 --ema-decay 0.998 \
  --patience 10 --augment medium --teacher runs/ens_v6a --no-teacher-flips --max-minutes 105 --no-progress \
  --out runs/$NAME || exit 1
scripts/post_member.sh $NAME $NAME
echo "ALL_DONE $(date +%T)"
