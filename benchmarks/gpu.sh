#!/usr/bin/env bash
# The whole book on a CUDA GPU, once: every chapter's wall time and peak memory, whether every
# check cell still holds, and the nccl path of the command line.
#
#   bash benchmarks/gpu.sh            # on a machine with an NVIDIA GPU, from the repository root
#
# Writes to ${OUT:-gpu-run}/: chapters.txt (benchmarks/run.py's table: a chapter whose check
# cells fail is reported as failed), pretrain-nccl.json (--history of a 1-process nccl run), and
# env.txt (GPU, driver, torch). Installs into a fresh .venv-gpu unless MMLIB_GPU_PYTHON names a
# Python that already has torch with CUDA (the GPU machine's own torch is kept, as on Colab).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-run}
mkdir -p "$out"
python=${MMLIB_GPU_PYTHON:-}
if [ -z "$python" ]; then
  python3 -m venv --system-site-packages .venv-gpu
  .venv-gpu/bin/pip install -q -e ".[test]" nbclient ipykernel
  python=.venv-gpu/bin/python
fi
"$python" - <<'PY' | tee "$out/env.txt"
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("torch", torch.__version__, "| cuda", torch.version.cuda, "|", torch.cuda.get_device_name(0))
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$out/env.txt" || true

# 1. Every chapter on the GPU (mmlib.setup picks CUDA when present), in a fresh kernel each.
"$python" -m ipykernel install --user --name python3 > /dev/null
"$python" benchmarks/run.py --keep-going 2>&1 | tee "$out/chapters.txt" || true

# 2. The unit tests (CPU and CUDA code paths alike).
"$python" -m pytest -q tests 2>&1 | tail -5 | tee "$out/tests.txt" || true

# 3. The command line with the nccl backend: one process per GPU.
gpus=$("$python" -c "import torch; print(torch.cuda.device_count())")
"$python" -m torch.distributed.run --standalone --nproc_per_node="$gpus" -m mmlib.pretrain \
  --steps 100 --backend nccl --history "$out/pretrain-nccl.json" --no-progress 2>&1 | tail -5
echo "results in $out/"
