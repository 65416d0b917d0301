#!/usr/bin/env bash
# Run bench.gpu on a lent GPU machine (the device tool), from the repository root there:
#   run(command="bash bench/gpu_device.sh", carry=[".whl"], timeout_s=560)
# after `make device-wheels` here. Arguments go to bench.gpu. The log and the figures land in
# $OUT (gpu.log, nvidia-smi.txt), which the tool brings back.
set -uo pipefail
out="${OUT:-/tmp/gpu-bench}"
mkdir -p "$out"
ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run 'make device-wheels' and carry .whl" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  | tee "$out/nvidia-smi.txt"
python3 -c "import torch, transformers, diffusers; print('torch', torch.__version__,
  'transformers', transformers.__version__, 'diffusers', diffusers.__version__)"
# Leave a minute of the call's limit for the transfers: stop the benchmark at 8.5 minutes.
timeout 510 python3 -m bench.gpu "$@" 2>&1 | tee "$out/gpu.log"
