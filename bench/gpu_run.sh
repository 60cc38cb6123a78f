#!/usr/bin/env bash
# The trainer bench's GPU rows in one call of a lent device machine (bench/RESULTS.md), most
# important first. Each part runs in its own process under its own time limit, so one slow part
# cannot eat the rest, and tees to its own file under $OUT, so a call stopped at its limit still
# returns what was measured (the benches print every row as soon as it is measured).
#
# Here, once: `python bench/gpu_pack.py pack` (fills the git-ignored .whl/ and .gpu/).
# There, from the repository root, carrying [".whl", ".gpu"]:  bash bench/gpu_run.sh
#
# Parts, in priority order: 1 minilm and 2 bbc steady state (Tailor eager and compiled against
# every HF row), 3 checkpoint stall (GPU_RUN_CKPT_ROUNDS rounds, default 1), 4 bbc-epoch end to
# end (one round, no warm-directory rows), 5 bert-base steady state. --gpu-all runs the same
# cases with 3 end-to-end rounds and the warm rows; the device lease is too short for that.
# Measured 2026-11-28 on an H200: prepare 8 s, parts 1-4 took 93, 161, (49, failed) and 200 s.
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
PY=${PY:-python3}
BUDGET=${GPU_RUN_BUDGET:-550}  # seconds from this script's start to the end of the last part
PARTS=${GPU_RUN_PARTS:-1 2 3 4 5}  # which parts to run (a rerun of one part: GPU_RUN_PARTS=3)
CKPT_ROUNDS=${GPU_RUN_CKPT_ROUNDS:-1}
SITE=${GPU_RUN_SITE:-/tmp/site}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT/driver.log"; }

# part NAME CAP NEED COMMAND...: COMMAND for at most min(CAP, what is left of BUDGET) seconds,
# skipped when less than NEED are left. timeout signals the part's whole process group, so the
# end-to-end children and the compile workers stop with it.
part() {
  local name=$1 cap=$2 need=$3 left limit
  shift 3
  if [[ " $PARTS " != *" ${name%%-*} "* ]]; then
    log "$name: not asked for (GPU_RUN_PARTS=$PARTS)"
    return
  fi
  left=$((BUDGET - SECONDS))
  limit=$((cap < left ? cap : left))
  if ((left < need)); then
    log "$name: skipped, ${left} s left (needs ${need})"
    return
  fi
  log "$name: start, limit ${limit} s"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  log "$name: exit ${PIPESTATUS[0]} (124: stopped at its limit)"
}

log "prepare"
if [[ ${GPU_RUN_INSTALL:-1} == 1 ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || { log "pip install failed"; exit 1; }
fi
export PYTHONPATH="$SITE:$PWD/.gpu/site:$PWD/trainer-image:$PWD/operator/contract:$PWD/bench"
{
  nvidia-smi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
  echo "cores $(nproc); $(uname -r)"
  free -g
} >"$OUT/env.txt" 2>&1
"$PY" bench/gpu_pack.py unpack --site "$SITE" >>"$OUT/env.txt" 2>&1 ||
  { log "unpack failed"; tail -20 "$OUT/env.txt"; exit 1; }
tail -20 "$OUT/env.txt"

best=/tmp/hf-best.json
rm -f "$best"
results=(--out "$OUT/results.md")
part 1-minilm 180 60 "$PY" bench/trainer_throughput.py --cases minilm --e2e-repeats 0 "${results[@]}"
part 2-bbc 250 90 "$PY" bench/trainer_throughput.py --cases bbc --e2e-repeats 0 \
  --hf-best "$best" "${results[@]}"
part 3-checkpoint 140 45 "$PY" bench/checkpoint_stall.py --rounds "$CKPT_ROUNDS" "${results[@]}"
if [[ -f $best || " $PARTS " != *" 4 "* ]]; then
  part 4-bbc-epoch 100000 60 "$PY" bench/trainer_throughput.py --cases bbc-epoch \
    --hf-best "$best" --e2e-repeats 1 --e2e-quick --e2e-log /tmp/e2e-children.log "${results[@]}"
  [[ -f /tmp/e2e-children.log ]] && tail -c 20000 /tmp/e2e-children.log >>"$OUT/4-bbc-epoch.log"
else
  log "4-bbc-epoch: skipped, the bbc part wrote no best HF settings"
fi
part 5-bert-base 100000 90 "$PY" bench/trainer_throughput.py --cases bert-base --e2e-repeats 0 \
  "${results[@]}"
log "done"
grep -h -e '^#' -e '^|' -e 'took' "$OUT/results.md" 2>/dev/null | tail -c 9000
