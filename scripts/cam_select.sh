#!/usr/bin/env bash
# Choose a bundle's heatmap on validation (README "Do the heatmaps look at the lesion?"): every LAYER x method,
# LIMIT (500) seeded-random validation images with masks, localisation only. scripts/cam_select.sh BUNDLE OUT LAYER...
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=$1; OUT=$2; shift 2
for layer in "$@"; do
  .venv/bin/dermxai explain-score --model "$BUNDLE" --data ../shared/data/ham10000 --split splits/ham10000_seed0.csv \
    --subset val --method gradcam --method gradcam++ --method hirescam --method layercam --limit "${LIMIT:-500}" \
    --localisation-only --layer "$layer" --out "$OUT/$layer"
done
echo "CAM_DONE $(date +%T)"
