#!/usr/bin/env bash
# Generator v2 (issue 33) on a lent GPU: ONE prepared command that trains the tiny generator from
# scratch with a frozen pretrained text encoder (all-MiniLM-L6-v2, float16, pruned vocabulary)
# on the seen split, checkpoints it in pieces the device returns, then evaluates it with the
# strict oracle on the protocol's prompts. experiments/generator_v2/README.md says more.
#
# Here, first:  .venv/bin/python experiments/generator_v2/prepare.py   (prints the `run` call)
# On the device (the `run` tool, from the repository root, carry as prepare.py prints):
#   bash experiments/generator_v2/run_device.sh
# Dry run on this CPU (tiny steps, ~2 minutes):
#   DEVICE=cpu STEPS=2 OUT=/tmp/gv2 bash experiments/generator_v2/run_device.sh
#
# Writes into $OUT (8 files at most, each < 16 MB): state.tar.00, state.tar.01 (the resumable
# checkpoint: state.py), export.tar (the EMA pipeline without the text encoder's weights),
# loss.csv, log.txt, quality.md, quality.json (if the evaluation ran).
set -u -o pipefail
T0=$(date +%s)
DEVICE=${DEVICE:-cuda}
OUT=${OUT:?set OUT to the folder for the results}
CARRY=${CARRY:-.generator_v2}
if [ "$DEVICE" = cpu ]; then  # the dry run: this machine's venv, small batches, a tiny evaluation
  PY=${PY:-.venv/bin/python}; INSTALL=${INSTALL:-no}; BATCH=${BATCH:-4}; WORKERS=${WORKERS:-1}
  RUN_DIR=${RUN_DIR:-/tmp/generator_v2_dry/run}; WORK=${WORK:-/tmp/generator_v2_dry/work}
  EVAL_LIMIT=${EVAL_LIMIT:-1}; EVAL_SEEDS=${EVAL_SEEDS:-0}; EVAL_STEPS=${EVAL_STEPS:-2}; EVAL_JOBS=${EVAL_JOBS:-1}
  THREADS=${THREADS:-1}; CKPT_EVERY=${CKPT_EVERY:-1}; EVAL_EVERY=${EVAL_EVERY:-2}; LOG_EVERY=${LOG_EVERY:-1}
else
  PY=${PY:-python3}; INSTALL=${INSTALL:-yes}; BATCH=${BATCH:-128}
  WORKERS=${WORKERS:-$("$PY" -c "import os; print(max(1, len(os.sched_getaffinity(0)) - 2))")}
  RUN_DIR=${RUN_DIR:-$CARRY/run}; WORK=${WORK:-/tmp/generator_v2}
  EVAL_LIMIT=${EVAL_LIMIT:-12}; EVAL_SEEDS=${EVAL_SEEDS:-0,1}; EVAL_STEPS=${EVAL_STEPS:-}; EVAL_JOBS=${EVAL_JOBS:-6}
  THREADS=${THREADS:-4}; CKPT_EVERY=${CKPT_EVERY:-1000}; EVAL_EVERY=${EVAL_EVERY:-500}; LOG_EVERY=${LOG_EVERY:-50}
fi
BUDGET_S=${BUDGET_S:-560}   # the whole script; the `run` call gets timeout_s 600
EVAL_S=${EVAL_S:-150}       # kept for the evaluation (0: none)
RESERVE_S=${RESERVE_S:-45}  # kept for export and packing
STEPS=${STEPS:-100000}      # total steps of the run; on the GPU the time budget ends a call first
LR=${LR:-1e-3}; WARMUP=${WARMUP:-500}; SEED=${SEED:-0}
MP=${MP:-auto}              # bf16 autocast where the GPU supports it
EVAL_DEVICE=${EVAL_DEVICE:-$DEVICE}
EVAL_SET=${EVAL_SET:-}      # more run overrides of the evaluation, e.g. "generator.guidance_scale=3"
EXTRA=${EXTRA:-}            # more key=value overrides of the training (configs/component/generator.yaml)
RESUME=${RESUME:-$CARRY/resume}
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac
mkdir -p "$OUT" "$WORK" "$RUN_DIR"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
log() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }

# 1. the packages the device lacks (diffusers, hydra-core, omegaconf, ...): carried wheels
if [ "$INSTALL" = yes ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$CARRY"/wheels/*.whl >>"$LOG" 2>&1 || { log "wheel install failed"; exit 1; }
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
  echo "cpus $("$PY" -c "import os; print(len(os.sched_getaffinity(0)))"), data workers $WORKERS"; } 2>&1 | tee -a "$LOG"
if [ "$MP" = auto ]; then
  MP=$("$PY" -c "import torch; print('bf16' if '$DEVICE'.startswith('cuda') and torch.cuda.is_bf16_supported() else 'no')")
fi

# 2. where the run starts: its own checkpoint (a warm device), else the carried state (an exact
#    resume), else the carried export (a warm start), else from scratch
CK="$RUN_DIR/ck"; EXPORT="$RUN_DIR/export"
INIT=()
if ls "$RESUME"/state.tar.* >/dev/null 2>&1; then
  "$PY" experiments/generator_v2/state.py unpack "$RESUME" "$CK" 2>&1 | tee -a "$LOG"
elif [ -f "$RESUME/export.tar" ] && [ ! -f "$CK/latest" ]; then
  "$PY" experiments/generator_v2/state.py assemble "$RESUME/export.tar" "$CARRY/text_encoder" "$WORK/init_from" 2>&1 | tee -a "$LOG" \
    && INIT=("init_from=$WORK/init_from")
fi
ARGS=("checkpoint_dir=$CK" "export_dir=$EXPORT" "device=$DEVICE" "mixed_precision=$MP" "noise_device=device"
      "num_threads=$THREADS" "data.num_workers=$WORKERS" "batch_size=$BATCH" "lr=$LR" "warmup_steps=$WARMUP"
      "steps=$STEPS" "seed=$SEED" "freeze_text_encoder=true" "model.text_encoder_path=$CARRY/text_encoder"
      "checkpoint_every=$CKPT_EVERY" "eval_every=$EVAL_EVERY" "log_every=$LOG_EVERY" "export_every=0"
      "preview_every=0" "${INIT[@]}" $EXTRA)

# 3. train until the time left is what export, packing and evaluation need (SIGTERM: the
#    trainer saves a checkpoint at the end of its step and exits)
TRAIN_S=$(( $(left) - EVAL_S - RESERVE_S ))
log "training for at most ${TRAIN_S} s: ${ARGS[*]}"
if [ "$TRAIN_S" -gt 20 ]; then
  timeout -s TERM -k 60 "$TRAIN_S" "$PY" -m cvg_bench.generators.tiny_training "${ARGS[@]}" 2>&1 \
    | tr '\r' '\n' | grep -v "^\s*$" | tee -a "$LOG"
  log "training exit ${PIPESTATUS[0]}"
fi
"$PY" -m cvg_bench.generators.tiny_training "${ARGS[@]}" export_only=true 2>&1 | grep -v "^\s*$" | tee -a "$LOG"
cp "$CK/loss.csv" "$OUT/" 2>/dev/null
"$PY" experiments/generator_v2/state.py pack "$CK" "$OUT" 2>&1 | tee -a "$LOG"
"$PY" experiments/generator_v2/state.py pack-export "$EXPORT" "$OUT" 2>&1 | tee -a "$LOG"
tail -n 3 "$CK/loss.csv" | tee -a "$LOG"

# 4. the strict oracle on the protocol's prompts (vanilla sampling, both splits; the quality
#    bar of experiments/quality_bar.py), within the time left; a cut evaluation is tabulated too
EVAL_LEFT=$(( $(left) - 15 ))
if [ "$EVAL_S" -gt 0 ] && [ "$EVAL_LEFT" -gt 30 ]; then
  case "$EXPORT" in /*) EXPORT_ABS=$EXPORT ;; *) EXPORT_ABS=$PWD/$EXPORT ;; esac
  QA=(--path "$EXPORT_ABS" --out "$WORK/quality" --work "$WORK/quality_runs" --limit "$EVAL_LIMIT"
      --seeds "$EVAL_SEEDS" --jobs "$EVAL_JOBS" --set "generator.device=$EVAL_DEVICE" --set save_videos=false)
  [ -n "$EVAL_STEPS" ] && QA+=(--set "generator.num_inference_steps=$EVAL_STEPS")
  for kv in $EVAL_SET; do QA+=(--set "$kv"); done
  rm -rf "$WORK/quality" "$WORK/quality_runs"  # records of an earlier model would be refused
  log "evaluating for at most ${EVAL_LEFT} s"
  # its own process group, so that a cut ends every shard of it
  SETSID=$(command -v setsid || true)
  $SETSID "$PY" -m experiments.quality_bar "${QA[@]}" >>"$LOG" 2>&1 &
  QPID=$!
  ( trap 'kill $SPID 2>/dev/null; exit 0' TERM; sleep "$EVAL_LEFT" & SPID=$!; wait $SPID
    kill -TERM -- "-$QPID" 2>/dev/null || kill -TERM "$QPID" 2>/dev/null ) &
  WPID=$!
  wait "$QPID"; QRC=$?
  kill "$WPID" 2>/dev/null; wait "$WPID" 2>/dev/null
  log "evaluation exit $QRC"
  if [ ! -f "$WORK/quality/quality.md" ]; then  # cut short: tabulate the videos it scored
    "$PY" -m experiments.quality_bar "${QA[@]}" --report-only >>"$LOG" 2>&1
  fi
  cp "$WORK/quality/quality.md" "$WORK/quality/quality.json" "$OUT/" 2>/dev/null
  cat "$OUT/quality.md" 2>/dev/null
fi
log "done"
ls -la "$OUT"
