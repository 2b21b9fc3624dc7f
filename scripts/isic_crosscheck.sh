#!/usr/bin/env bash
# The official scorer needs pandas < 3: python3 -m venv /tmp/isic && /tmp/isic/bin/pip install isic-challenge-scoring "pandas<3"
# then ISIC_SCORER=/tmp/isic/bin/isic-challenge-scoring bash scripts/isic_crosscheck.sh
# Cross-check: dermxai predict --format isic scored by the official ISIC scorer vs dermxai evaluate --labels (val split).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/isic_check
.venv/bin/python - <<'PY'
import pandas as pd
from dermxai.evaluation.evaluate import from_split
rows = from_split("../shared/data/ham10000", "splits/ham10000_seed0.csv", "val").table
gt = pd.DataFrame({"image": rows["image_id"]})
for c in ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]:
    gt[c] = (rows["dx"].str.upper() == c).astype(float)
gt.to_csv("runs/isic_check/val_groundtruth.csv", index=False)
open("runs/isic_check/paths.txt", "w").write("\n".join(rows["path"]))
PY
xargs -x -s 1500000 -a runs/isic_check/paths.txt .venv/bin/dermxai predict --model src/dermxai/assets/default_model --format isic --out runs/isic_check/val_submission.csv > /dev/null
${ISIC_SCORER:-isic-challenge-scoring} -o json classification runs/isic_check/val_groundtruth.csv runs/isic_check/val_submission.csv > runs/isic_check/official.json
.venv/bin/dermxai evaluate --model src/dermxai/assets/default_model --labels runs/isic_check/val_groundtruth.csv --images ../shared/data/ham10000 --bootstrap 10 --out runs/isic_check/eval > /dev/null
python3 -c "
import json
o = json.load(open('runs/isic_check/official.json')); m = json.load(open('runs/isic_check/eval/metrics.json'))
print('official balanced_accuracy', o['aggregate']['balanced_accuracy'] if 'aggregate' in o else o)
print('dermxai evaluate balanced_accuracy', m['balanced_accuracy'])"
