#!/usr/bin/env bash
# Run gpunet's GPU tests and benchmarks on a machine with an NVIDIA GPU, sized for a short
# window: under 8 minutes on one H100/H200.
# Usage: scripts/gpu_check.sh OUTDIR      (logs, skipped-test list, test XML; any directory)
#
# * gpunet runs from this checkout through PYTHONPATH (no pip install: the GPU image may have
#   no network and no hatchling).
# * Preflight first (device visible, one kernel compiles and launches); if it fails the
#   script stops there, so a broken image costs a minute, not the window.
# * GPUNET_REQUIRE_GPU=1: a GPU test that skips is a failure (tests/conftest.py), and every
#   skipped test is listed with its reason in OUTDIR/skipped.txt.
# * Each step has its own timeout. Benchmarks use reduced sizes (--quick and friends) and
#   write benchmarks/results/<date>-<gpu>-<benchmark>.json (the device name is inside); the
#   kernel benchmark saves after every case, so a crash keeps what was measured.
# * GPUNET_GPU_CHECK_DRY=1 prints the steps without running them (what CI checks on a CPU).
#
# Datasets: $GPUNET_DATA if set, else ./.data or ../shared/datasets when present. On a
# machine with no network, copy the MNIST/Fashion-MNIST folders into ./.data first
# (git ignores it); the benchmarks that train on MNIST need them.
set -uo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: scripts/gpu_check.sh OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" || { echo "gpu_check: cannot create $1" >&2; exit 2; }
out=$(cd "$1" && pwd -P)                 # absolute, before anything changes directory
cd "$(dirname "$0")/.." || exit 2
root=$(pwd -P)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 GPUNET_REQUIRE_GPU=1 GPUNET_SKIP_REPORT="$out/skipped.txt"
PY=${PYTHON:-python3}
dry=${GPUNET_GPU_CHECK_DRY:-0}
log="$out/gpu_check.log"
: > "$log"
status=0
start=$SECONDS

say() { echo "$*" | tee -a "$log"; }

# step NAME SECONDS CMD...: run CMD under its own timeout, clipped to what is left of the
# whole run's budget (GPUNET_GPU_CHECK_BUDGET, 470 s), output to OUTDIR/NAME.log.
budget=${GPUNET_GPU_CHECK_BUDGET:-470}
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - (SECONDS - start)))
  if [ "$left" -lt 5 ]; then
    say "== $name: not run, the ${budget}s budget is spent"
    status=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "== $name (timeout ${limit}s): $*"
  if [ "$dry" = 1 ]; then return 0; fi
  local t0=$SECONDS rc
  timeout --kill-after=15 "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  tail -n 8 "$out/$name.log" | sed 's/^/   /' | tee -a "$log"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && say "   timed out after ${limit}s"
  say "== $name: exit $rc after $((SECONDS - t0))s (total $((SECONDS - start))s)"
  [ $rc -eq 0 ] || status=1
  return $rc
}

if [ -z "${GPUNET_DATA:-}" ]; then
  for d in .data ../shared/datasets; do
    [ -d "$d" ] && { export GPUNET_DATA="$(cd "$d" && pwd -P)"; break; }
  done
fi
say "gpu_check: checkout $root, results in $out, PYTHONPATH=$PYTHONPATH"
say "GPUNET_DATA=${GPUNET_DATA:-<unset: MNIST benchmarks will fail>}"

# ---------------------------------------------------------------- preflight
if [ "$dry" != 1 ]; then   # informational: CuPy's view below is what decides
  timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia_smi.csv" 2>&1 \
    || say "nvidia-smi did not answer (see $out/nvidia_smi.csv)"
fi
step preflight-device 90 "$PY" -c '
import gpunet as gn
s = gn.gpu_status()
print(s.reason)
assert s.available, "no usable GPU: " + s.reason
print(s.devices[0]["name"])' || { say "gpu_check: no usable GPU, stopping"; exit 1; }
step preflight-kernel 180 "$PY" -c '
import numpy as np, gpunet as gn
from gpunet import ops
dev = gn.device("cuda")
assert ops.kernels_available(dev), "kernel sources not found"
x = dev.asarray(np.array([-2.0, 0.0, 3.0], np.float32))
assert dev.to_host(ops.relu_backward(x, x)).tolist() == [0.0, 0.0, 3.0]
loss, g, n = ops.softmax_cross_entropy(dev.asarray(np.zeros((2, 4), np.float32)), dev.asarray(np.array([0, 3])))
assert abs(float(dev.to_host(loss)) - np.log(4)) < 1e-6
print("kernels compile and launch on", gn.gpu_status().devices[0]["name"])' \
  || { say "gpu_check: the kernels do not compile or launch, stopping"; exit 1; }

if [ "$dry" = 1 ]; then gpu="dry-run"; else
  gpu=$("$PY" -c 'import re, gpunet as gn; print(re.sub(r"[^a-z0-9]+", "-", gn.gpu_status().devices[0]["name"].lower()).strip("-"))')
fi
day=$(date -u +%Y-%m-%d)
results="$root/benchmarks/results"
mkdir -p "$results"
name_for() { echo "$results/$day-$gpu-$1.json"; }

step info 60 "$PY" -m gpunet info --json
[ "$dry" = 1 ] || cp "$out/info.log" "$out/info.json"

# ---------------------------------------------------------------- GPU tests (must not skip)
step gpu-tests 240 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml="$out/gpu_tests.xml" tests
[ "$dry" = 1 ] || { [ -f "$out/skipped.txt" ] && say "skipped tests (with reasons): $out/skipped.txt"; }

# ---------------------------------------------------------------- benchmarks (reduced sizes; each ships in gpunet/bench/)
step bench-kernels 120 "$PY" -m gpunet bench kernels --device cuda --quick --repeats 20 --json-out "$(name_for kernels)"
step bench-train 150 "$PY" -m gpunet bench train --device cuda --seconds 0.5 --rounds 3 --json-out "$(name_for train)"
step bench-train-bf16 60 "$PY" -m gpunet bench train --device cuda --precision bf16 --workloads mlp-b1024,tf-cifar10-cnn --seconds 0.5 --rounds 3 --json-out "$(name_for train-bf16)"
step bench-parallel 60 "$PY" -m gpunet bench parallel --device cuda --repeats 3 --samples 10000 --json-out "$(name_for parallel)"
step bench-loader 45 "$PY" -m gpunet bench loader --device cuda --repeats 3 --json-out "$(name_for loader)"
step bench-doctor 60 "$PY" -m gpunet bench doctor --device cuda --repeats 3 --json-out "$(name_for doctor)"
step bench-optim 60 "$PY" -m gpunet bench optim --device cuda --optimizers sgd,adam,adamw --repeats 7 --json-out "$(name_for optim)"

say "gpu_check status: $status after $((SECONDS - start))s; benchmark JSON in $results/$day-$gpu-*.json"
exit $status
