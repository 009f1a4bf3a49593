#!/usr/bin/env bash
# The GPU check, prepared as one command for a session whose task is lent a device machine
# (docs/performance.md, "GPU"). The machine's image has torch, tensorboard, matplotlib, scipy,
# pytest, but not Hydra, so carry its wheels:
#   here, once:   pip download hydra-core omegaconf antlr4-python3-runtime==4.9.3 --no-deps -d .wheels
#   device run:   carry [".wheels"], command "bash bench/device_check.sh", timeout_s ~540
# Results land in $OUT (device.txt, tests.txt, bench_cuda.txt, bench_cuda/train.json).
set -uo pipefail
OUT=${OUT:-/tmp/device_out}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -d .wheels ]; then
  $PY -m pip install -q --no-index --find-links .wheels hydra-core omegaconf tensorboardX 2>&1 | tail -2
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{
  date -u
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} 2>&1 | tee "$OUT/device.txt"
# the CUDA path of the dynamics and Lanczos on the device (skipped on CPU-only machines)
$PY -m pytest -q -p no:cacheprovider tests/test_dynamics.py tests/test_spectral.py tests/test_cuda_network.py 2>&1 | tail -4 | tee "$OUT/tests.txt"
# the benchmark suite's testbed part on the device (the theory runs on numpy: CPU numbers only)
timeout 420 $PY -m bench --quick --skip theory --device "$DEVICE" --out-dir "$OUT/bench_$DEVICE" 2>&1 \
  | tee "$OUT/bench_$DEVICE.txt" | tail -40
