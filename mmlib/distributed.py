"""Data-parallel contrastive pretraining with PyTorch's own engine (chapter 6).

Run it as one process, or as N with ``torchrun``; the code is the same::

    python -m mmlib.pretrain --pairs 20000 --steps 200 --out clip.pt
    torchrun --standalone --nproc_per_node=2 -m mmlib.pretrain --pairs 20000 --steps 200 --out clip.pt

Every process builds the same seeded dataset and takes its own slice of every *global* batch
(rank r gets rows r*b .. (r+1)*b - 1 of each batch of N*b), so N processes see exactly the batches
one process would. The model is wrapped in ``DistributedDataParallel``, which averages gradients
across processes after each backward pass.

The contrastive twist: each image's negatives are the captions of the whole global batch, so every
process ``gather``s the embeddings of all the others before computing the loss. ``all_gather``
itself has no gradient; ``gather`` below gives it one: the gradient arriving at the gathered
matrix is summed over processes and each process keeps the rows of its own shard. With DDP's
average, the parameters then receive exactly the gradient of the single-process loss (tested).
The learnable temperature is an ordinary parameter: DDP keeps it identical on every process.

Rank 0 alone prints, draws the progress bar and writes checkpoints; every process shuts the
process group down, also after an error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

BACKENDS = ("gloo", "nccl")


# ---------------------------------------------------------------------------------------------
# All-gather with a gradient
# ---------------------------------------------------------------------------------------------

class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), len(local)
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every process's loss depends on this shard: add their gradients
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather(local: torch.Tensor) -> torch.Tensor:
    """Concatenate ``local`` (B, D) from every process in rank order: (world_size * B, D).
    Gradients flow back to each process's own rows. Without a process group, returns ``local``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    return _GatherWithGrad.apply(local)


class ContrastiveForward(nn.Module):
    """A ``DualEncoder`` whose forward also returns its logit scale and bias. DDP tracks only the
    parameters a forward pass uses, so the learnable temperature must be read inside one."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict):
        image_emb, text_emb = self.model(batch)
        return image_emb, text_emb, self.model.scale, self.model.bias


def global_contrastive_loss(model: nn.Module, batch: dict, loss: str = "clip") -> torch.Tensor:
    """The contrastive loss over the *global* batch: local embeddings, gathered from every process.
    ``model`` is a ``DualEncoder``, or a ``ContrastiveForward`` (possibly inside DDP)."""
    from mmlib import objectives

    if loss not in ("clip", "siglip"):
        raise ValueError(f"unknown contrastive loss {loss!r}: expected 'clip' or 'siglip'")
    forward = model if isinstance(model, (ContrastiveForward, nn.parallel.DistributedDataParallel)) \
        else ContrastiveForward(model)
    image_emb, text_emb, scale, bias = forward(batch)
    image_emb, text_emb = gather(image_emb), gather(text_emb)
    if loss == "clip":
        return objectives.clip_loss(image_emb, text_emb, scale)
    return objectives.siglip_loss(image_emb, text_emb, scale, bias)


# ---------------------------------------------------------------------------------------------
# The training run
# ---------------------------------------------------------------------------------------------

@dataclass
class Config:
    """Everything a run depends on; saved in its checkpoint."""

    pairs: int = 20_000
    width: int = 128
    tower: str = "cnn"
    batch_size: int = 256
    steps: int = 200
    lr: float = 4e-3
    loss: str = "clip"
    seed: int = 0
    out: str | None = None
    resume: bool = False
    backend: str | None = None
    log: str | None = None
    save_every: int = 0
    stop_at: int | None = None
    progress: bool = True


def build_model(config: Config, vocab_size: int) -> nn.Module:
    """The chapter-4 dual encoder at ``config.width``; ``tower='vit'`` uses TinyViT (LayerNorm only,
    so its forward pass does not depend on how the batch is split; see chapter 6)."""
    from mmlib.encoders import BagOfEmbeddings, ImageCNN, TinyViT
    from mmlib.models import DualEncoder

    torch.manual_seed(config.seed)
    image = (ImageCNN(dim=config.width, channels=(16, 32)) if config.tower == "cnn"
             else TinyViT(dim=config.width, depth=2, heads=4))
    model = DualEncoder(image, BagOfEmbeddings(vocab_size, 64), embed_dim=64)
    model.bias.requires_grad_(config.loss == "siglip")  # DDP needs every trainable parameter used
    return model


def learning_rate(config: Config, step: int) -> float:
    """Linear warm-up over the first 10% of steps, then cosine decay to zero. A function of the step
    alone, so a resumed run continues on the same schedule."""
    warmup = max(1, config.steps // 10)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def check_config(config: Config, world_size: int) -> None:
    """Clear errors for arguments that cannot work."""
    if config.backend is not None and config.backend not in BACKENDS:
        raise ValueError(f"unknown backend {config.backend!r}: expected one of {BACKENDS} "
                         "(gloo for CPUs, nccl for NVIDIA GPUs)")
    if config.backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("the nccl backend needs CUDA GPUs; on CPUs use --backend gloo")
    if config.tower not in ("cnn", "vit"):
        raise ValueError(f"unknown image tower {config.tower!r}: expected 'cnn' or 'vit'")
    if config.loss not in ("clip", "siglip"):
        raise ValueError(f"unknown loss {config.loss!r}: expected 'clip' or 'siglip'")
    for name in ("pairs", "width", "batch_size", "steps"):
        if getattr(config, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}")
    if config.batch_size % world_size:
        raise ValueError(f"the global batch size {config.batch_size} is not divisible by the {world_size} "
                         f"processes: use a multiple of {world_size}")
    if config.batch_size > config.pairs:
        raise ValueError(f"the batch size {config.batch_size} is larger than the dataset ({config.pairs} pairs)")
    if config.resume and (config.out is None or not Path(config.out).exists()):
        raise ValueError(f"--resume needs an existing checkpoint at --out, but {config.out!r} does not exist")


def _setup(config: Config) -> tuple[int, int, torch.device]:
    """Join the process group when started by torchrun (it sets WORLD_SIZE, RANK, LOCAL_RANK)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    check_config(config, world_size)
    backend = config.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        dist.init_process_group(backend, rank=rank, world_size=world_size)
        if device.type == "cpu":  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    return rank, world_size, device


def train(config: Config) -> dict:
    """One training run (the body of the command line). Returns the log: loss per step, throughput."""
    from tqdm.auto import tqdm

    from mmlib import world
    from mmlib.data import make_dataset
    from mmlib.metrics import load_checkpoint, save_checkpoint

    rank, world_size, device = _setup(config)
    try:
        data = make_dataset("pairs", config.pairs, held_out=world.default_held_out(), distractors=0.3,
                            seed=config.seed)
        model = build_model(config, len(data.tokenizer)).to(device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                      weight_decay=1e-4)
        log = {"loss": [], "world_size": world_size, "config": asdict(config)}
        start_step = 0
        if config.resume:
            state = load_checkpoint(model, config.out)
            optimizer.load_state_dict(state["optimizer"])
            log["loss"], start_step = state["log_loss"], state["step"]
        # find_unused_parameters: the CNN's positional embedding only feeds its tokens, which the
        # contrastive loss (pooled features) does not use; DDP must not wait for its gradient.
        ddp = ContrastiveForward(model)
        if world_size > 1:
            ddp = nn.parallel.DistributedDataParallel(ddp, find_unused_parameters=config.tower == "cnn")
        local = config.batch_size // world_size
        per_epoch = len(data) // config.batch_size
        bar = tqdm(total=config.steps, initial=start_step, desc=f"pretraining on {world_size} process(es)",
                   disable=rank != 0 or not config.progress, leave=False, mininterval=0.5)
        model.train()
        begin = time.perf_counter()
        stop = config.steps if config.stop_at is None else min(config.stop_at, config.steps)
        for step in range(start_step, stop):
            epoch, position = divmod(step, per_epoch)
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
            rows = order[position * config.batch_size:(position + 1) * config.batch_size]
            batch = data._batch(rows[rank * local:(rank + 1) * local], device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            value = global_contrastive_loss(ddp, batch, config.loss)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # same gradients everywhere: same clipping
            optimizer.step()
            model.clamp_scale()
            log["loss"].append(value.item())
            bar.update()
            done = step + 1
            if rank == 0 and config.out and (done == stop or (config.save_every and done % config.save_every == 0)):
                save_checkpoint(model, config.out, step=done, optimizer=optimizer.state_dict(),
                                log_loss=log["loss"], config=asdict(config), world_size=world_size)
        bar.close()
        seconds = time.perf_counter() - begin
        log["seconds"] = seconds
        log["images_per_second"] = (stop - start_step) * config.batch_size / max(seconds, 1e-9)
        if rank == 0 and config.log:
            Path(config.log).write_text(json.dumps(log))
        return log
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def launch(*args: str, processes: int = 1) -> dict:
    """Run ``python -m mmlib.pretrain *args`` as a separate job: one process, or ``processes`` under
    torchrun (``python -m torch.distributed.run``, the same launcher as the ``torchrun`` command).
    Returns the run's history (loss per step, images per second). Raises with the job's own error
    message if it fails."""
    import subprocess
    import tempfile

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


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m mmlib.pretrain", description=(
        "Contrastive (CLIP) pretraining on the book's world, on one process or under "
        "torchrun --nproc_per_node=N (data parallel, global-batch contrastive loss)."))
    defaults = Config()
    parser.add_argument("--pairs", type=int, default=defaults.pairs, help="image-caption pairs to generate")
    parser.add_argument("--width", type=int, default=defaults.width, help="image tower width (feature dim)")
    parser.add_argument("--tower", default=defaults.tower, help="image tower: cnn (chapter 4) or vit")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch size")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps in total")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    parser.add_argument("--loss", default=defaults.loss, help="clip (softmax) or siglip (sigmoid)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", default=None, help="checkpoint to write (rank 0 only)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    parser.add_argument("--save-every", type=int, default=0, help="also checkpoint every this many steps")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop (and checkpoint) after this step, as a time-limited job would; continue with --resume")
    parser.add_argument("--backend", default=None, help="gloo or nccl (default: nccl with CUDA, else gloo)")
    parser.add_argument("--history", dest="log", default=None, help="write the loss per step and throughput to this JSON file")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return Config(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; bad arguments exit with status 2 and a one-line explanation."""
    config = parse_args(argv)
    try:
        log = train(config)
    except ValueError as err:
        print(f"python -m mmlib.pretrain: error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{len(log['loss'])} steps on {log['world_size']} process(es); final loss {log['loss'][-1]:.4f}; "
              f"{log['images_per_second']:.0f} images/s")
    return 0
