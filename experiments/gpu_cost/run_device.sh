#!/usr/bin/env bash
# Real-size cost of CVG and the energy baselines on a GPU: one prepared command for a lent
# device (README "Performance"). The device machine has torch but not diffusers, hydra or
# omegaconf: they travel as wheels in .whl/ (experiments/gpu_cost/README.md says how to make
# them). Run from the repository root:
#   OUT=/some/folder bash experiments/gpu_cost/run_device.sh            # real size, GPU
#   PY=.venv/bin/python SIZE=tiny DEVICE=cpu OUT=/tmp/x bash experiments/gpu_cost/run_device.sh
# Writes bench_<generator>_<size>.{json,md}, gpu.txt and log.txt into $OUT (8 files at most).
set -u -o pipefail
PY=${PY:-python3}
SIZE=${SIZE:-real}
DEVICE=${DEVICE:-cuda}
GENERATORS=${GENERATORS:-wan cogvideox zeroscope}
PER_GENERATOR_S=${PER_GENERATOR_S:-170}
OUT=${OUT:?set OUT to the folder for the results}
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac  # the bench runs from $WORK
WORK=${WORK:-/tmp/cvg_bench_gpu}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ -d .whl ] && [ "${INSTALL:-$SIZE}" != tiny ]; then  # the device: carried wheels + the project, no deps
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl || exit 1
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" . || exit 1
  export PYTHONPATH="$WORK/site"
fi
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi";
  (cd "$WORK" && "$PY" -c "import torch, diffusers, transformers, cvg_bench; print('cvg_bench', cvg_bench.__file__); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"); } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
for g in $GENERATORS; do
  echo "=== $g ($SIZE) $(date -u +%T)" | tee -a "$OUT/log.txt"
  # from $WORK: in the repository root `python -m` would import the uninstalled source tree
  (cd "$WORK" && timeout "$PER_GENERATOR_S" "$PY" -m cvg_bench bench "generator=$g" "generator.size=$SIZE" "generator.device=$DEVICE" \
    "out_dir=$WORK/out") 2>&1 | grep -v "^\s*$" | tee -a "$OUT/log.txt"
  echo "=== $g exit ${PIPESTATUS[0]} $(date -u +%T)" | tee -a "$OUT/log.txt"
  cp "$WORK/out/bench_${g}_${SIZE}".json "$WORK/out/bench_${g}_${SIZE}".md "$OUT/" 2>/dev/null
done
ls -la "$OUT"
