#!/usr/bin/env bash
# Run gpunet's GPU tests and benchmarks on a machine with an NVIDIA GPU.
# Usage: scripts/gpu_check.sh OUTDIR   (logs and JSON results are written there)
#
# Datasets: $GPUNET_DATA if set, else ./.data or ../shared/datasets when present. On a
# machine with no network, copy the MNIST/Fashion-MNIST folders into ./.data first
# (git ignores it); the benchmarks that train on MNIST need them.
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
status=0
if [ -z "${GPUNET_DATA:-}" ]; then
  for d in .data ../shared/datasets; do
    [ -d "$d" ] && { export GPUNET_DATA="$(cd "$d" && pwd)"; break; }
  done
fi
echo "GPUNET_DATA=${GPUNET_DATA:-<unset: MNIST benchmarks will fail>}" | tee -a "$out/gpu_check.log"

python -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
  || python -m pip install --quiet -e . || echo "warning: could not install gpunet; using the checkout" | tee -a "$out/gpu_check.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

python -m gpunet info | tee "$out/info.txt"
python -m gpunet info --json > "$out/info.json"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia_smi.csv" 2>&1 || true

# GPU tests: only the cases marked gpu; they must not skip here.
python -m pytest -m gpu -ra -q --junitxml="$out/gpu_tests.xml" 2>&1 | tee "$out/gpu_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# Benchmarks (every one ships in gpunet/bench/) write JSON next to their logs.
for bench in train kernels loader parallel doctor; do
  name="bench_$bench"
  python -m gpunet bench "$bench" --device cuda --out "$out/$name.json" 2>&1 | tee "$out/$name.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpunet bench $bench failed" | tee -a "$out/gpu_check.log"; status=1; }
done
echo "gpu_check status: $status" | tee -a "$out/gpu_check.log"
exit $status
