"""What is distributed about data-parallel training (chapter 6): the all-gather with a gradient,
joining and leaving the process group, and launching a job on N processes.

The training loop itself is the book's one loop (``mmlib.train.fit_steps``): started by ``torchrun``,
it wraps the model in ``DistributedDataParallel``, gives every process its slice of each global
batch, and lets rank 0 alone draw the progress bar and write checkpoints. The command line that
runs it is ``python -m mmlib.pretrain`` (see ``mmlib.pretrain``).

The contrastive twist: each image's negatives are the captions of the whole global batch, so every
process ``gather``s the embeddings of all the others before computing the loss. ``all_gather``
itself has no gradient; ``gather`` below gives it one: the gradient arriving at the gathered
matrix is summed over processes and each process keeps the rows of its own shard. With DDP's
average, the parameters then receive exactly the gradient of the single-process loss (tested).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

BACKENDS = ("gloo", "nccl")


# ---------------------------------------------------------------------------------------------
# All-gather with a gradient
# ---------------------------------------------------------------------------------------------

class GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), len(local)
        parts = [torch.empty_like(local)
                 for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        # Every process's loss depends on every shard: sum their gradients,
        # then keep the rows of this process's own shard.
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather(local: torch.Tensor) -> torch.Tensor:
    """Concatenate ``local`` (B, D) from every process in rank order: (world_size * B, D).
    Gradients flow back to each process's own rows. Without a process group, returns ``local``."""
    if world_size() == 1:
        return local
    return GatherWithGrad.apply(local)


# ---------------------------------------------------------------------------------------------
# The process group
# ---------------------------------------------------------------------------------------------

def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's number, 0 to world_size - 1 (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def check_backend(backend: str | None) -> None:
    """Clear errors for a backend that cannot work here."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {BACKENDS} "
                         "(gloo for CPUs, nccl for NVIDIA GPUs)")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("the nccl backend needs CUDA GPUs; on CPUs use --backend gloo")


def join(backend: str | None = None) -> torch.device:
    """Join the process group when started by ``torchrun`` (it sets WORLD_SIZE, RANK and
    LOCAL_RANK); a plain ``python`` start stays a single process. Returns this process's device:
    its own GPU with nccl, else the CPU (whose cores the processes then share)."""
    check_backend(backend)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if processes > 1 and not dist.is_initialized():
        dist.init_process_group(backend, rank=int(os.environ.get("RANK", "0")), world_size=processes)
        if device.type == "cpu":  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))
    return device


def leave() -> None:
    """Shut the process group down (every process, also after an error)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(*args: str, processes: int = 1) -> dict:
    """Run ``python -m mmlib.pretrain *args`` as a separate job: one process, or ``processes`` under
    torchrun (``python -m torch.distributed.run``, the same launcher as the ``torchrun`` command).
    Returns the run's history (loss per step, images per second). Raises with the job's own error
    message if it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        history = Path(tmp) / "history.json"
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                    if processes > 1 else [sys.executable])
        command = launcher + ["-m", "mmlib.pretrain", *args, "--history", str(history), "--no-progress"]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr[-3000:]}")
        return json.loads(history.read_text())


__all__ = ["BACKENDS", "GatherWithGrad", "gather", "world_size", "rank", "check_backend", "join", "leave",
           "launch"]
