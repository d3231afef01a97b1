#!/usr/bin/env bash
# GPU figures: the whole benchmark suite on CUDA in bf16 autocast (a few minutes on one H100),
# with model FLOP utilisation of the training steps (FLOPs counted by
# torch.utils.flop_counter.FlopCounterMode; peak dense bf16 FLOP/s from the card's name, see
# jepa_core.benchmark.PEAK_BF16_FLOPS: H100 / H200 989 TFLOP/s). Results go to BENCHMARKS.md under
# "Suite results: cuda-bf16[-official]" with the card's name.
#
#   benchmarks/gpu_suite.sh                              # ours only
#   OFFICIAL_IJEPA=/tmp/official/ijepa OFFICIAL_JEPA=/tmp/official/jepa \
#   OFFICIAL_VJEPA2=/tmp/official/vjepa2 benchmarks/gpu_suite.sh   # with official comparisons
#   benchmarks/gpu_suite.sh --compile                    # extra arguments go to the suite
#
# Without CUDA it runs its CPU fallback (fp32, quick, nothing written) so that the script
# itself stays tested.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
OFFICIAL=()
if [ -n "${OFFICIAL_IJEPA:-}" ]; then OFFICIAL+=(--official-ijepa "$OFFICIAL_IJEPA"); fi
if [ -n "${OFFICIAL_JEPA:-}" ]; then OFFICIAL+=(--official-jepa "$OFFICIAL_JEPA"); fi
if [ -n "${OFFICIAL_VJEPA2:-}" ]; then OFFICIAL+=(--official-vjepa2 "$OFFICIAL_VJEPA2"); fi
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
    exec "$PY" benchmarks/run.py --device cuda --dtype bf16 --sizes tiny,small,base,large --repeats 10 \
        ${OFFICIAL[@]+"${OFFICIAL[@]}"} "$@"
fi
echo "gpu_suite.sh: no CUDA device; running the CPU fallback path (quick, fp32, not written)" >&2
exec "$PY" benchmarks/run.py --device cpu --quick --cases masks,ema --no-write ${OFFICIAL[@]+"${OFFICIAL[@]}"} "$@"
