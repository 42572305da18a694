#!/usr/bin/env bash
# The GPU measurements of the performance work in one go (about 7 minutes on one H100 or H200):
# training throughput (model only, full data path, each fast path, naive baselines, torch.compile),
# bf16 against fp32 accuracy, and K small trials packed on the GPU. Each step writes JSON and a log
# into the output folder and has its own time limit, so one slow step cannot lose the others.
#
#   benchmarks/gpu_suite.sh [OUTPUT_FOLDER]        (SIZE=32 SCALE=0.03 ... for a CPU dry run)
set -u
out=${1:-gpu-results}
mkdir -p "$out"
# wbc and study come from the installed package (pip install -e .); each script finds
# benchmarks/harness.py next to itself.
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
size=${SIZE:-224} scale=${SCALE:-0.25} batch=${BATCH:-256} device=${DEVICE:-cuda}
tree=${TREE:-/tmp/wbc-bench-tree}
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv \
    || true; nproc; $py -c "import torch; print('torch', torch.__version__)"; } 2>&1 \
  | tee "$out/machine.txt"
started=$(date +%s)
[ -d "$tree" ] || $py -c "from wbc.synth import synthesize; synthesize('$tree', scale=$scale, image_size=256, seed=0)"
echo "tree ready in $(( $(date +%s) - started )) s" | tee -a "$out/machine.txt"
timeout "${T_THROUGHPUT:-210}" $py benchmarks/train_throughput.py --device "$device" \
  --image-size "$size" --batch-size "$batch" ${COMPILE---compile} --root "$tree" \
  --json "$out/throughput.json" 2>&1 | tee "$out/throughput.log"
timeout "${T_PRECISION:-110}" $py benchmarks/precision_accuracy.py --device "$device" \
  --image-size "$size" --batch-size "$batch" --epochs "${EPOCHS:-6}" --seeds "${SEEDS:-3}" \
  --epoch-images "${EPOCH_IMAGES:-4096}" --root "$tree" --json "$out/precision.json" 2>&1 \
  | tee "$out/precision.log"
timeout "${T_PACKING:-150}" $py benchmarks/trial_packing.py --device "$device" \
  --image-size "$size" --batch-size "$batch" --epochs "${PACK_EPOCHS:-4}" \
  --epoch-images "${EPOCH_IMAGES:-4096}" --trials "${TRIALS:-8}" --packs ${PACKS:-1 2 4} \
  --root "$tree" --json "$out/packing.json" 2>&1 | tee "$out/packing.log"
echo "suite done in $(( $(date +%s) - started )) s"
