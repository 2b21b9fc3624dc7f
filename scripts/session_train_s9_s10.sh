#!/usr/bin/env bash
# Two members back to back: Lite1 light seed 9, then Lite0 light seed 10; each shipped fp16, calibrated, evaluated on val.
set -uo pipefail
cd "$(dirname "$0")/.."
D=../shared/data/ham10000; S=splits/ham10000_seed0.csv
COMMON="--batch-size 48 --lr 0.002 --backbone-lr-scale 0.3 --class-weight-power 0.5 --label-smoothing 0.05 --ema-decay 0.998 --patience 10 --augment light --no-progress"
date +%T
.venv/bin/dermxai train --data $D --split $S --arch efficientnet_lite1 --epochs 7 --seed 9 $COMMON --max-minutes 42 --out runs/lite1_light_s9 && scripts/post_member.sh lite1_light_s9 lite1_light_s9
.venv/bin/dermxai train --data $D --split $S --arch efficientnet_lite0 --epochs 8 --seed 10 $COMMON --max-minutes 30 --out runs/lite0_light_s10 && scripts/post_member.sh lite0_light_s10 lite0_light_s10
echo ALL_DONE $(date +%T)
