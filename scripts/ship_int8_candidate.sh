#!/usr/bin/env bash
# Ship a built int8 candidate: fp16 copy, int8 export, calibrate, gate, index, val, test once, shifted val.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1; TAG=$2
D=../shared/data/ham10000; S=splits/ham10000_seed0.csv; B=runs/default_$TAG
.venv/bin/python scripts/ship_default.py runs/$NAME --out $B
.venv/bin/dermxai export --model $B --int8 --data $D --split $S
.venv/bin/dermxai calibrate --model $B --data $D --split $S
.venv/bin/dermxai gate --model $B --data $D --split $S --write --out results/default_${TAG}_ood_gate.json
.venv/bin/dermxai index --model $B --data $D --split $S
.venv/bin/dermxai evaluate --model $B --data $D --split $S --subset val --out results/study/default_$TAG/val
echo VAL_DONE
