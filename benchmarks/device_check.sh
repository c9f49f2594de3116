#!/usr/bin/env bash
# The GPU checks, prepared as one command for a lent GPU machine (device tool):
#
#   bash benchmarks/device_check.sh          # about 5-8 minutes on one H100/H200
#
# 1. the CUDA tests of the transforms (CPU and CUDA generators on CUDA cubes, against CPU);
# 2. the transforms' pairs/s on the GPU (benchmarks/transforms.py --device cuda);
# 3. fp32 against bf16 autocast and the full pretraining step against the model step for
#    the width-32 U-Net at batch 6 and 32 (benchmarks/gpu_pretrain.py, JSON).
#
# It runs genesis from src/ without installing it: the machine's Python must hold torch,
# numpy, pandas, pytest, safetensors and tqdm (the workplace's CUDA image does). Every
# step's output is also written to $OUT (or ./device-check), so it comes back even when a
# later step fails or the run is cut short. DEVICE_CHECK_SMOKE=1 runs tiny sizes on the
# CPU, to check the script before spending GPU time. Exit status: 1 if any step failed.
set -uo pipefail

out=${OUT:-device-check}
python=${PYTHON:-python3}
smoke=${DEVICE_CHECK_SMOKE:-0}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=0

step() {
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.log" || failed=1
}

step device "$python" -c "import torch
print('torch', torch.__version__, '| cuda', torch.cuda.is_available(),
      '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
step tests "$python" -m pytest -q -p no:cacheprovider tests/test_transforms_compose.py \
    tests/test_transforms_local_shuffle.py tests/test_transforms_nonlinear.py \
    tests/test_transforms_painting.py tests/test_transforms_flip.py
if [ "$smoke" = 1 ]; then
    step transforms "$python" benchmarks/transforms.py --batch 2 --repeats 2 --size 32 32 16
    step gpu_pretrain "$python" benchmarks/gpu_pretrain.py --smoke \
        --json "$out/gpu_pretrain.json"
else
    step transforms "$python" benchmarks/transforms.py --batch 6 --repeats 10 \
        --device cuda --gpu-batch 32
    step gpu_pretrain "$python" benchmarks/gpu_pretrain.py --json "$out/gpu_pretrain.json"
fi
echo "== done; logs and JSON in $out; failed steps: $failed"
exit "$failed"
