#!/usr/bin/env bash
# One member: Lite2, medium augmentation, seed 11, distilled from candidate v6 (runs/ens_v6a, built by
# scripts/build_int8_candidate.sh); shipped fp16, calibrated, evaluated on val.
set -uo pipefail
cd "$(dirname "$0")/.."
D=../shared/data/ham10000; S=splits/ham10000_seed0.csv; NAME=lite2_medium_distill_s11; M=members/$NAME
date +%T
.venv/bin/dermxai train --data $D --split $S --arch efficientnet_lite2 --epochs 8 --seed 11 --batch-size 48 \
  --lr 0.002 --backbone-lr-scale 0.3 --class-weight-power 0.5 --label-smoothing 0.05 --ema-decay 0.998 \
  --patience 10 --augment medium --teacher runs/ens_v6a --no-teacher-flips --max-minutes 105 --no-progress \
  --out runs/$NAME || exit 1
.venv/bin/python scripts/ship_default.py runs/$NAME/bundle --out $M
.venv/bin/dermxai calibrate --model $M --data $D --split $S
mkdir -p results/study/$NAME
cp $M/config.json results/study/$NAME/bundle_config.json
cp -r runs/$NAME/logs results/study/$NAME/
.venv/bin/dermxai evaluate --model $M --out results/study/$NAME/val --data $D --split $S --subset val
echo "ALL_DONE $(date +%T)"
