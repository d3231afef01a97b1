#!/usr/bin/env bash
# The GPU check of compiled steps with static mask shapes (one script for a lent H100 / H200,
# about 10 minutes): I-JEPA ViT-L/16 and ViT-B/16 steps in bf16, eager with the official masks
# against mask buckets under torch.compile, max-autotune and CUDA graphs (step time, MFU, peak
# memory, compile time, compiled graphs, host syncs per step), then the suite's ViT-L training
# steps of every method compiled. Results are appended to BENCHMARKS.md.
#
#   benchmarks/gpu_compile.sh            # on the GPU machine, from the repository root
#
# Without CUDA it runs the quick CPU path of benchmarks/compile_buckets.py (nothing written).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
    "$PY" benchmarks/compile_buckets.py --device cuda --size large --batch 64 --steps 20
    "$PY" benchmarks/compile_buckets.py --device cuda --size base --batch 128 --steps 20 \
        --modes eager,eager-buckets,compile,cudagraphs
    exec "$PY" benchmarks/run.py --device cuda --dtype bf16 --sizes large --repeats 10 --compile \
        --cases steps "$@"
fi
echo "gpu_compile.sh: no CUDA device; running the quick CPU path (not written)" >&2
exec "$PY" benchmarks/compile_buckets.py --quick --no-write --modes eager,eager-buckets
