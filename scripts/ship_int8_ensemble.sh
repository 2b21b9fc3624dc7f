#!/usr/bin/env bash
# Build and ship an int8 ensemble in one pass (validation only; the test split is not read):
#   scripts/ship_int8_ensemble.sh TAG "ENSEMBLE OPTIONS" MEMBER...
#   e.g. scripts/ship_int8_ensemble.sh v6c "--explain-member 2 --gate-only members/lite2_full_s0" members/...
# ensemble -> fp16 copy -> calibrate -> export --int8 (kept only if val answers agree) -> calibrate on the served
# graph -> gate --write (validation only) -> index -> evaluate val. Writes runs/default_TAG and
# results/study/default_TAG/{val,ood_gate_val_only.json}. Once a candidate ships, its gate's test rows come from
# `dermxai gate --model runs/default_TAG --data D --split S --measure-only --out results/default_TAG_ood_gate.json`.
# EXPORT=float: export a float32 graph, then calibrate on it (no int8), for an x86 CPU without VNNI, where an
# int8 graph does not serve (README).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=$1; read -r -a OPTIONS <<< "$2"; shift 2
D=../shared/data/ham10000; S=splits/ham10000_seed0.csv; B=runs/default_$TAG
.venv/bin/dermxai ensemble "$@" "${OPTIONS[@]}" --out runs/ens_$TAG
.venv/bin/python scripts/ship_default.py runs/ens_$TAG --out $B
if [ "${EXPORT:-int8}" = float ]; then
  .venv/bin/dermxai export --model $B
  .venv/bin/dermxai calibrate --model $B --data $D --split $S
else
  .venv/bin/dermxai calibrate --model $B --data $D --split $S
  .venv/bin/dermxai export --model $B --int8 --data $D --split $S
  .venv/bin/dermxai calibrate --model $B --data $D --split $S
fi
.venv/bin/dermxai gate --model $B --data $D --split $S --write --validation-only \
  --out results/study/default_$TAG/ood_gate_val_only.json
.venv/bin/dermxai index --model $B --data $D --split $S
.venv/bin/dermxai evaluate --model $B --data $D --split $S --subset val --out results/study/default_$TAG/val
echo "VAL_DONE $(date +%T)"
