#!/usr/bin/env bash
# One prepared run on a lent GPU machine (no install there: its python3 has torch; our packages
# are put on PYTHONPATH). Runs the CUDA tests, then the GPU suite with the official comparisons
# when checkouts are in .official/ (ignored by git, never committed). Results go to $OUT.
#   bash benchmarks/device_run.sh [all | any of tests,bench,profile] [extra suite arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/jepa-device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHON=${PYTHON:-python3}
SITE=""
if ls .whl/jepa_*.whl >/dev/null 2>&1; then
    # Wheels built here (`uv build --all-packages --wheel -o .whl`): their metadata carries the
    # entry points (method and evaluator registries); the sources below come first on the path.
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/jepa-site .whl/jepa_*.whl && SITE=:/tmp/jepa-site
fi
export PYTHONPATH=packages/jepa-core/src:packages/jepa-image/src:packages/jepa-video/src:packages/jepa-eval/src$SITE
what=${1:-all}; shift || true
if [ -x "$(command -v nvidia-smi)" ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/env.txt"; fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/env.txt"
if [[ $what == all || $what == *tests* ]]; then
    timeout "${TESTS_TIMEOUT:-240}" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider --durations=8 \
        packages/jepa-core/tests/test_core_cuda.py packages/jepa-image/tests/test_image_cuda.py \
        packages/jepa-video/tests/test_video_cuda.py 2>&1 | tee "$OUT/gpu_tests.log"
fi
for r in ijepa jepa vjepa2; do
    if [ -d ".official/$r/src" ]; then export "OFFICIAL_$(echo $r | tr a-z A-Z)=.official/$r"; fi
done
if [[ $what == all || $what == *bench* ]]; then
    [ -f "$OUT/BENCHMARKS.md" ] || cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
    timeout "${BENCH_TIMEOUT:-330}" bash benchmarks/gpu_suite.sh --cases steps,ema --output "$OUT/BENCHMARKS.md" "$@" \
        2>&1 | tee -a "$OUT/bench.log"
fi
if [[ $what == all || $what == *profile* ]]; then
    timeout "${PROFILE_TIMEOUT:-150}" "$PYTHON" benchmarks/profile_step.py --device cuda --dtype bf16 \
        --sizes "${PROFILE_SIZES:-tiny,base}" ${OFFICIAL_IJEPA:+--official-ijepa $OFFICIAL_IJEPA} \
        ${OFFICIAL_JEPA:+--official-jepa $OFFICIAL_JEPA} ${OFFICIAL_VJEPA2:+--official-vjepa2 $OFFICIAL_VJEPA2} \
        > "$OUT/profile.txt" 2> "$OUT/profile.err"
fi
