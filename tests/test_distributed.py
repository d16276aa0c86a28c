"""Data-parallel pretraining: the global-batch contrastive loss on 2 gloo processes equals the
1-process loss, gradients included; the command line trains what the notebook trains; checkpoints
cross from 2 processes to 1; a resumed run continues exactly; bad arguments are explained."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmlib.data import make_dataset
from mmlib.distributed import gather, launch
from mmlib.pretrain import Config, check_config, clip_model, clip_pairs, main, pretrain
from mmlib.checkpoint import load_checkpoint
from mmlib.train import _Objective

GLOBAL_BATCH = 16


def batch_and_model(loss, local_loss=False):
    data = clip_pairs(GLOBAL_BATCH, seed=1)
    return data, clip_model(len(data.tokenizer), width=32, tower="vit", loss=loss,
                            local_loss=local_loss)


def _worker(rank, world_size, init_file, out, loss, local_loss):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        data, model = batch_and_model(loss, local_loss)
        local = GLOBAL_BATCH // world_size
        ddp = torch.nn.parallel.DistributedDataParallel(_Objective(model, None))
        value = ddp(data.batch(torch.arange(rank * local, (rank + 1) * local)))["loss"]
        value.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"loss": value.detach(), "grads": grads}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("loss,local_loss", [("clip", False), ("siglip", False),
                                             ("clip", True), ("siglip", True)])
def test_two_processes_give_the_single_process_loss_and_gradients(loss, local_loss):
    """The full loss on every process, or each process's own rows (local_loss): either way DDP
    trains with exactly the single-process gradients of the global batch."""
    data, model = batch_and_model(loss)
    value = model.loss(data.batch(torch.arange(GLOBAL_BATCH)))["loss"]
    value.backward()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank"
        mp.spawn(_worker, args=(2, str(Path(tmp) / "init"), str(out), loss, local_loss), nprocs=2, join=True)
        results = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    result = results[0]
    # the full loss is the same on every process; local losses average to it
    losses = [r["loss"].item() for r in results]
    assert abs(sum(losses) / 2 - value.item()) < 1e-5
    assert (abs(losses[0] - losses[1]) < 1e-6) == (not local_loss)
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(result["grads"]) == set(expected)
    for name, grad in expected.items():
        assert torch.allclose(result["grads"][name], grad, atol=1e-5), f"gradient of {name} differs"
    assert "log_scale" in expected, "the temperature learns, and its gradient agrees too"
    assert ("bias" in expected) == (loss == "siglip"), "only SigLIP trains the logit bias"


def test_gather_without_a_process_group_is_the_identity():
    x = torch.randn(3, 4)
    assert gather(x) is x


def test_per_process_batches_are_slices_of_the_global_batch():
    data = make_dataset("pairs", 40, seed=2)
    whole = next(data.stream(8, seed=3, start=6, drop_last=True))
    parts = [next(data.stream(8, seed=3, start=6, drop_last=True, rank=r, world_size=2)) for r in (0, 1)]
    assert torch.equal(torch.cat([p["image"] for p in parts]), whole["image"])
    with pytest.raises(ValueError, match="multiple of 3"):
        next(data.stream(8, drop_last=True, world_size=3))
    with pytest.raises(ValueError, match="rank 2 is not in 0..1"):
        next(data.stream(8, drop_last=True, rank=2, world_size=2))


def run_cli(*args, processes=1, cwd=None):
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                "-m", "mmlib.pretrain"]
               if processes > 1 else [sys.executable, "-m", "mmlib.pretrain"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command + list(args) + ["--no-progress"], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_the_command_line_trains_what_pretrain_trains():
    """Same settings, same loss curve: the notebook's call and python -m mmlib.pretrain share one loop."""
    log = launch("--pairs", "256", "--steps", "6", "--batch-size", "32", "--tower", "vit", "--width", "32",
                 "--lr", "3e-3")
    data = clip_pairs(256)
    model = clip_model(len(data.tokenizer), width=32, tower="vit")
    history = pretrain(model, data, steps=6, batch_size=32, lr=3e-3, device="cpu", progress=False)
    assert log["loss"] == pytest.approx(history.loss, abs=1e-5)


def test_a_two_process_checkpoint_loads_into_one_process_and_matches(tmp_path):
    args = ["--pairs", "256", "--steps", "4", "--batch-size", "32", "--tower", "vit", "--width", "32"]
    two = run_cli(*args, "--out", str(tmp_path / "two.pt"), processes=2)
    assert two.returncode == 0, two.stderr[-2000:]
    one = run_cli(*args, "--out", str(tmp_path / "one.pt"))
    assert one.returncode == 0, one.stderr[-2000:]
    data = make_dataset("pairs", 64, split="test", seed=3)
    embeddings = []
    for name in ("two", "one"):
        model = clip_model(len(data.tokenizer), width=32, tower="vit")
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
    assert torch.load(tmp_path / "part.pt", weights_only=True)["step"] == 3
    resumed = run_cli(*args, "--out", str(tmp_path / "part.pt"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    again = torch.load(tmp_path / "part.pt", weights_only=True)
    assert again["step"] == 6
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
    with pytest.raises(ValueError, match="unknown image tower 'rnn'"):
        check_config(Config(tower="rnn"), world_size=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="nccl backend needs CUDA"):
            check_config(Config(backend="nccl"), world_size=1)
    assert main(["--backend", "mpi"]) == 2
    assert "unknown backend 'mpi'" in capsys.readouterr().err


def test_help_shows_the_defaults_that_say_something(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 200)" in text and "(default: 20000)" in text
    assert "(default: None)" not in text and "(default: True)" not in text
    assert "--seed SEED seed of" in text
