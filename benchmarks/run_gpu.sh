#!/usr/bin/env bash
# The face benchmarks on one GPU, as measured for benchmarks/results/: every table at its defaults
# (3 attack seeds, 3 judges), the processes side by side on the one device. Each process writes its cells
# atomically as it finishes them, and the caches are locked per artifact, so the processes share the
# target, judges, priors and surrogates, and a rerun resumes where a stopped one ended.
#
#   OUT=runs/gpu LFW=../shared/data/lfw ATT=../shared/data/att_faces bash benchmarks/run_gpu.sh
#
# LIMIT (seconds, default 3600) stops each process of the first phase, LIMIT2 (default LIMIT) each MIFace
# process; DEVICE (default cuda); ARGS are added to every attack_variants.py call, FACE_ARGS to
# face_models.py and SURROGATE_ARGS to surrogates.py (e.g. smaller budgets for a smoke test).
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-../mi_art_runs/gpu}
LFW=${LFW:-../../shared/data/lfw}
ATT=${ATT:-../../shared/data/att_faces}
LIMIT=${LIMIT:-3600}
LIMIT2=${LIMIT2:-$LIMIT}
DEVICE=${DEVICE:-cuda}
ARGS=${ARGS:-}
FACE_ARGS=${FACE_ARGS:-}
SURROGATE_ARGS=${SURROGATE_ARGS:-}
CACHE=${CACHE:-$OUT/cache}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

run() {  # limit, name, then the arguments of attack_variants.py
  local limit=$1 name=$2; shift 2
  # shellcheck disable=SC2086  # ARGS: words on purpose
  timeout "$limit" python attack_variants.py --device "$DEVICE" --threads 3 --out "$OUT/$name.json" "$@" $ARGS \
    > "$OUT/$name.log" 2>&1
}

GMI="GMI,GMI+LOM,GMI+MA,GMI+LOMMA,GMI+LOMMA (paper)"
KEDMI="KEDMI,KEDMI+LOM,KEDMI+MA,KEDMI+LOMMA,KEDMI+LOMMA (paper)"
# all reconstructions of a method in one batch: the models are small, the GPU is not
run "$LIMIT" lfw-gmi --benchmark lfw --data-root "$LFW" --cache-dir "$CACHE/lfw" --batch-size 250 --methods "$GMI" &
run "$LIMIT" lfw-kedmi --benchmark lfw --data-root "$LFW" --cache-dir "$CACHE/lfw" --methods "$KEDMI" &
run "$LIMIT" att-gmi --benchmark att --data-root "$ATT" --cache-dir "$CACHE/att" --batch-size 100 --methods "$GMI" &
run "$LIMIT" att-kedmi --benchmark att --data-root "$ATT" --cache-dir "$CACHE/att" --methods "$KEDMI" &
# targets and judges by architecture: a cache of their own (18 models the other steps do not need)
# shellcheck disable=SC2086
timeout "$LIMIT" python face_models.py --benchmark lfw --data-root "$LFW" --device "$DEVICE" --seeds 3 \
  --threads 3 --cache-dir "$CACHE/lfw-models" --out "$OUT/face_models-lfw.json" $FACE_ARGS \
  > "$OUT/face_models-lfw.log" 2>&1 &
# surrogates by distillation setting, distilled from the attack benchmark's target
# shellcheck disable=SC2086
timeout "$LIMIT" python surrogates.py --benchmark lfw --data-root "$LFW" --device "$DEVICE" --threads 3 \
  --cache-dir "$CACHE/lfw" --out "$OUT/surrogates-lfw.json" $SURROGATE_ARGS > "$OUT/surrogates-lfw.log" 2>&1 &
wait
# ART's MIFace last: one backward pass per identity and step, the slowest row
run "$LIMIT2" lfw-miface --benchmark lfw --data-root "$LFW" --cache-dir "$CACHE/lfw" --methods "ART MIFace" &
run "$LIMIT2" att-miface --benchmark att --data-root "$ATT" --cache-dir "$CACHE/att" --methods "ART MIFace" &
wait
for b in lfw att; do  # one table per benchmark from the split result files
  # shellcheck disable=SC2086
  python attack_variants.py --benchmark $b --data-root "$([ $b = lfw ] && echo "$LFW" || echo "$ATT")" \
    --device "$DEVICE" --cache-dir "$CACHE/$b" --out "$OUT/$b-gmi.json" --methods none $ARGS \
    --also "$OUT/$b-kedmi.json" "$OUT/$b-miface.json" > "$OUT/$b-table.txt" 2>&1
done
