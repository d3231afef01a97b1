#!/usr/bin/env bash
# The GPU demo presets (`demo_gpu`) measured on a lent GPU, one run each under a time cap, the
# runs' report tables collected in one file to copy into the package READMEs:
#
#   benchmarks/gpu_demos.sh [minutes per run, default 4] [methods, default "ijepa lejepa vjepa vjepa2"]
#
# A run the cap stops keeps its checkpoints but has no report; its row says so.
# Output: runs/gpu_demos/<method>/ and runs/gpu_demos/summary.md (also printed).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_demos.sh: no CUDA device; nothing to measure" >&2
    exit 0
fi
MINUTES=${1:-4}
METHODS=${2:-"ijepa lejepa vjepa vjepa2"}
OUT=runs/gpu_demos
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
{
    echo "# demo_gpu presets, $(date -u +%Y-%m-%d)"
    "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
} > "$SUMMARY"
for m in $METHODS; do
    rm -rf "${OUT:?}/$m"
    start=$(date +%s)
    timeout --signal=TERM "$((MINUTES * 60))" "$PY" -m jepa_core.cli pretrain "$m" --preset demo_gpu \
        train.run_dir="$OUT/$m" train.progress=false > "$OUT/$m.log" 2>&1
    rc=$?
    {
        echo; echo "## $m (exit $rc, $(( $(date +%s) - start )) s wall)"
        if [ -f "$OUT/$m/report.md" ]; then sed -n '/^## Evaluation/,$p' "$OUT/$m/report.md"
        else echo "no report: stopped by the ${MINUTES}-minute cap or failed; see $OUT/$m.log"; fi
    } >> "$SUMMARY"
done
cat "$SUMMARY"
