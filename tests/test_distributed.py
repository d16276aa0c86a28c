"""mmlib.distributed: the global-batch contrastive loss on 2 gloo processes equals the 1-process
loss, gradients included; checkpoints cross from 2 processes to 1; bad arguments are explained."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmlib import world
from mmlib.data import make_dataset
from mmlib.distributed import Config, ContrastiveForward, build_model, check_config, gather, global_contrastive_loss, main
from mmlib.metrics import load_checkpoint

GLOBAL_BATCH = 16


def batch_and_model(loss):
    data = make_dataset("pairs", GLOBAL_BATCH, held_out=world.default_held_out(), seed=1)
    model = build_model(Config(tower="vit", width=32, loss=loss), len(data.tokenizer))
    return data, model


def _worker(rank, world_size, init_file, out, loss):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        data, model = batch_and_model(loss)
        local = GLOBAL_BATCH // world_size
        ddp = torch.nn.parallel.DistributedDataParallel(ContrastiveForward(model))
        value = global_contrastive_loss(ddp, data._batch(torch.arange(rank * local, (rank + 1) * local)), loss)
        value.backward()
        if rank == 0:
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            torch.save({"loss": value.detach(), "grads": grads}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_two_processes_give_the_single_process_loss_and_gradients(loss):
    data, model = batch_and_model(loss)
    value = global_contrastive_loss(model, data._batch(torch.arange(GLOBAL_BATCH)), loss)
    value.backward()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.pt"
        mp.spawn(_worker, args=(2, str(Path(tmp) / "init"), str(out), loss), nprocs=2, join=True)
        result = torch.load(out, weights_only=True)
    assert abs(result["loss"].item() - value.item()) < 1e-5
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(result["grads"]) == set(expected)
    for name, grad in expected.items():
        assert torch.allclose(result["grads"][name], grad,
                              atol=1e-5), f"gradient of {name} differs"
    assert "log_scale" in expected, "the temperature learns, and its gradient agrees too"


def test_gather_without_a_process_group_is_the_identity():
    x = torch.randn(3, 4)
    assert gather(x) is x


def run_cli(*args, processes=1, cwd=None):
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                "-m", "mmlib.pretrain"]
               if processes > 1 else [sys.executable, "-m", "mmlib.pretrain"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command + list(args) + ["--no-progress"], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_a_two_process_checkpoint_loads_into_one_process_and_matches(tmp_path):
    args = ["--pairs", "256", "--steps", "4", "--batch-size", "32", "--tower", "vit", "--width", "32"]
    two = run_cli(*args, "--out", str(tmp_path / "two.pt"), processes=2)
    assert two.returncode == 0, two.stderr[-2000:]
    one = run_cli(*args, "--out", str(tmp_path / "one.pt"))
    assert one.returncode == 0, one.stderr[-2000:]
    data = make_dataset("pairs", 64, split="test", seed=3)
    embeddings = []
    for name in ("two", "one"):
        model = build_model(Config(tower="vit", width=32), len(data.tokenizer))
        meta = load_checkpoint(model, tmp_path / f"{name}.pt")
        assert meta["step"] == 4 and meta["world_size"] == (2 if name == "two" else 1)
        with torch.no_grad():
            embeddings.append(model.eval().embed_images(data.images.float() / 255))
    assert torch.allclose(embeddings[0], embeddings[1], atol=1e-4), "2 processes must train the same model as 1"


def test_a_resumed_run_continues_exactly(tmp_path):
    args = ["--pairs", "256", "--steps", "6", "--batch-size", "32", "--tower", "vit", "--width", "32"]
    assert run_cli(*args, "--out", str(tmp_path / "full.pt")).returncode == 0
    part = run_cli(*args, "--out", str(tmp_path / "part.pt"), "--stop-at", "3")
    assert part.returncode == 0, part.stderr[-2000:]
    assert torch.load(tmp_path / "part.pt", weights_only=True)["metadata"]["step"] == 3
    resumed = run_cli(*args, "--out", str(tmp_path / "part.pt"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    again = torch.load(tmp_path / "part.pt", weights_only=True)
    assert again["metadata"]["step"] == 6
    for key, value in full["state_dict"].items():
        assert torch.allclose(value, again["state_dict"][key], atol=1e-5), key


def test_bad_arguments_are_explained(tmp_path, capsys):
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        check_config(Config(batch_size=256), world_size=3)
    with pytest.raises(ValueError, match="unknown backend 'mpi'"):
        check_config(Config(backend="mpi"), world_size=1)
    with pytest.raises(ValueError, match="--resume needs an existing checkpoint"):
        check_config(Config(resume=True, out=str(tmp_path / "missing.pt")), world_size=1)
    with pytest.raises(ValueError, match="larger than the dataset"):
        check_config(Config(pairs=100, batch_size=256), world_size=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="nccl backend needs CUDA"):
            check_config(Config(backend="nccl"), world_size=1)
    assert main(["--backend", "mpi"]) == 2
    assert "unknown backend 'mpi'" in capsys.readouterr().err
