#!/usr/bin/env bash
# The one prepared command for a lent GPU (one H100/H200-class card, <= 10 minutes, nothing downloaded).
#
# On the device tool, from the repository root, with the packed images carried beside the tree:
#   python scripts/pack_images.py pack --data ../shared/data/ham10000 --out device_data/ham10000   # here, once
#   run(command="bash scripts/gpu_run.sh", carry=["device_data"], timeout_s=600)
# Test on a CPU with a tiny configuration (what tests/test_gpu_script.py does):
#   TINY=1 OUT=/tmp/gpu_out PACKED=/tmp/packed/fixture bash scripts/gpu_run.sh
#
# Phases, under one time budget (BUDGET_S, default 540 s of the 600 s a command may run): each training run
# is capped with `dermxai train --max-minutes` (it stops gracefully and still writes its best bundle), every
# other step with `timeout`, and the packing step always runs:
#   1. unpack the carried images into a HAM10000-layout folder;
#   2. the source study's three backbones (ResNet18, DenseNet121, EfficientNet-B0) from scratch (no ImageNet
#      weights are reachable there), EPOCHS_SCRATCH epochs at 224x224, bf16 mixed precision, channels_last;
#   3. the shipped recipe at a higher resolution: EfficientNet-Lite0 fine-tuned from members/lite0_light_s0 (the default is now an ensemble) at 300x400;
#   4. each bundle calibrated on val, then evaluated once on test;
#   5. float16 weights + configs + metrics packed into $OUT in parts of <= 15 MiB (the device returns at
#      most 8 files of <= 16 MiB). Rebuild here with: cat OUT/gpu_bundles.tar.part-* | tar -x -C runs/gpu
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/artifacts/gpu_out}
PACKED=${PACKED:-device_data/ham10000}
WORK=${WORK:-$PWD/artifacts/gpu_work}
SPLIT=${SPLIT:-splits/ham10000_seed0.csv}
if [ "${TINY:-0}" = 1 ]; then  # CPU smoke test: minutes, not hours
    EPOCHS_SCRATCH=1; EPOCHS_FINETUNE=1; SIZE_SCRATCH="32 32"; SIZE_FINETUNE="48 64"; BATCH=8; LIMIT="--limit-train-batches 2"
    ACCELERATOR=cpu; BUDGET_S=${BUDGET_S:-1500}; SPLIT="$WORK/split.csv"  # the committed split names the full dataset
else
    EPOCHS_SCRATCH=${EPOCHS_SCRATCH:-30}; EPOCHS_FINETUNE=${EPOCHS_FINETUNE:-8}; SIZE_SCRATCH="224 224"
    SIZE_FINETUNE="300 400"; BATCH=256; LIMIT=""; ACCELERATOR=gpu; BUDGET_S=${BUDGET_S:-540}
fi
DEADLINE=$((SECONDS + BUDGET_S))
rm -rf "$WORK"  # a warm machine keeps files between calls: never ship an earlier call's bundles
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpu_run.log"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
left() { echo $((DEADLINE - SECONDS)); }
dermxai() { timeout "$(( $(left) > 5 ? $(left) - 5 : 1 ))" "$PY" -m dermxai.cli "$@" >>"$LOG" 2>&1; }

say "start: $( "$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")')"
"$PY" scripts/pack_images.py unpack "$PACKED" --out "$WORK/data" >>"$LOG" 2>&1 || { say "unpack failed"; exit 1; }
DATA="$WORK/data"
[ -f "$SPLIT" ] || "$PY" -m dermxai.cli data split --data "$DATA" --out "$WORK/split.csv" >>"$LOG" 2>&1
[ -f "$SPLIT" ] || SPLIT="$WORK/split.csv"

train() {  # NAME ARCH WEIGHTS EPOCHS H W LR BACKBONE_SCALE SHARE (share of the time left, reserving 90 s)
    local start=$SECONDS minutes
    minutes=$(awk -v s="$(( $(left) - 90 ))" -v f="$9" 'BEGIN { m = s * f / 60; print (m > 0.2 ? m : 0.2) }')
    dermxai train --data "$DATA" --split "$SPLIT" --out "$WORK/runs/$1" --arch "$2" --weights "$3" --epochs "$4" \
        --height "$5" --width "$6" --lr "$7" --backbone-lr-scale "$8" --batch-size "$BATCH" --label-smoothing 0.05 \
        --class-weight-power 0.5 --ema-decay 0.99 --patience 100 --precision auto --accelerator "$ACCELERATOR" \
        --max-minutes "$minutes" --no-progress $LIMIT
    say "$1: train exit $? in $((SECONDS - start)) s (cap $minutes min)"
}
read -r SH SW <<<"$SIZE_SCRATCH"
read -r FH FW <<<"$SIZE_FINETUNE"
train resnet18 resnet18 none "$EPOCHS_SCRATCH" "$SH" "$SW" 2e-3 1.0 0.18
train densenet121 densenet121 none "$EPOCHS_SCRATCH" "$SH" "$SW" 2e-3 1.0 0.40
train efficientnet_b0 efficientnet_b0 none "$EPOCHS_SCRATCH" "$SH" "$SW" 2e-3 1.0 0.55
train lite0_hires efficientnet_lite0 members/lite0_light_s0/model.safetensors "$EPOCHS_FINETUNE" "$FH" "$FW" 3e-4 0.5 0.75

for bundle in "$WORK"/runs/*/bundle; do
    [ -f "$bundle/model.safetensors" ] || continue
    name=$(basename "$(dirname "$bundle")")
    dermxai calibrate --model "$bundle" --data "$DATA" --split "$SPLIT" && \
        dermxai evaluate --model "$bundle" --data "$DATA" --split "$SPLIT" --subset test --out "$bundle/test"
    say "$name: calibrate + evaluate exit $?"
    "$PY" scripts/ship_default.py "$bundle" --out "$WORK/ship/$name" >>"$LOG" 2>&1
    cp "$bundle/test/metrics.json" "$WORK/ship/$name/metrics.json" 2>/dev/null
done
tar -C "$WORK/ship" -cf "$WORK/gpu_bundles.tar" . 2>>"$LOG" && split -b 15M -d "$WORK/gpu_bundles.tar" "$OUT/gpu_bundles.tar.part-"
say "done: $(ls "$OUT" | tr '\n' ' ')"
