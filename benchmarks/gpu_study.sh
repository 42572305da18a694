#!/usr/bin/env bash
# One GPU, one command: the throughput suite, then a scaled paper-preset study end to end, with
# the study's time split, GPU utilisation, peak GPU memory and the card's name. Sized for about
# 6 minutes of study on one H100 (plus about 4 for the throughput suite); every step has its own
# time limit and writes into the output folder, so one slow step cannot lose the others.
#
#   benchmarks/gpu_study.sh [OUTPUT_FOLDER]
#
# The study: the paper preset (224 px, the four budgets, the report's three strategies) on a
# synthetic tree at SCALE of the report's counts, STUDY_SEARCH trials a cell, STUDY_SEEDS final
# seeds, STUDY_EPOCHS epochs of at least EPOCH_IMAGES images, CAM16 pretrained for
# PRETRAIN_EPOCHS; GPU_SHARE of the GPU a trial (0.5: two trials share it). A CPU dry run at tiny scale (what the test does):
#
#   DEVICE=cpu SIZE=32 SCALE=0.03 SKIP_SUITE=1 STUDY_SEARCH=1 STUDY_SEEDS=1 STUDY_EPOCHS=1 \
#     benchmarks/gpu_study.sh out
set -u
out=$(mkdir -p "${1:-gpu-study}" && cd "${1:-gpu-study}" && pwd)
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
device=${DEVICE:-cuda} size=${SIZE:-224} scale=${SCALE:-0.25}
search=${STUDY_SEARCH:-2} seeds=${STUDY_SEEDS:-2} epochs=${STUDY_EPOCHS:-6} epoch_images=${EPOCH_IMAGES:-2048}
pretrain_epochs=${PRETRAIN_EPOCHS:-4} share=${GPU_SHARE:-0.5} cpus=${CPUS_PER_TRIAL:-4}
started=$(date +%s)
{
  echo "date: $(date -u +%FT%TZ)"
  git -C "$here/.." rev-parse HEAD 2>/dev/null | sed 's/^/commit: /'
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  echo "cpu cores: $(nproc)"
  $py -c "from wbc.training.hardware import describe; print(describe())"
} | tee "$out/machine.txt"

# (a) The throughput suite: model only, the full data path and its fast paths, bf16 against
# fp32 accuracy, trials packed on one GPU (benchmarks/gpu_suite.sh).
if [ -z "${SKIP_SUITE:-}" ]; then
  timeout "${T_SUITE:-300}" bash "$here/gpu_suite.sh" "$out/suite" 2>&1 | tee "$out/suite.log"
fi

# (b) The study, with the GPU sampled every half second while it runs.
if [ "$device" = cuda ]; then
  gpus=$share
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits \
    -lms 500 > "$out/gpu_samples.csv" 2>/dev/null &
  sampler=$!
else
  gpus=0
  sampler=
fi
study_started=$(date +%s)
timeout "${T_STUDY:-540}" $py -m study run --preset paper --results "$out/study" \
  --set synthetic_scale="$scale" --set image_size="$size" \
  --set 'strategies=["scratch","pretrain","pretrain_aug"]' \
  --set search_trials="$search" --set startup_trials="$search" --set final_seeds="$seeds" \
  --set epochs="$epochs" --set grace_epochs=1 --set pretrain_epochs="$pretrain_epochs" \
  --set train.min_epoch_images="$epoch_images" --set checkpoint_every=0 \
  --set resources.gpus_per_trial="$gpus" --set resources.cpus_per_trial="$cpus" \
  2>&1 | tee "$out/study.log"
status=${PIPESTATUS[0]}
study_seconds=$(( $(date +%s) - study_started ))
[ -n "$sampler" ] && kill "$sampler" 2>/dev/null

# (c) What it cost: the study's own time split, GPU utilisation and memory, the card.
$py "$here/gpu_study_summary.py" --out "$out" --status "$status" --seconds "$study_seconds" \
  2>&1 | tee "$out/summary.txt"
echo "gpu_study done in $(( $(date +%s) - started )) s (study exit status $status)"
