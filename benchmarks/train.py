"""Benchmark row for mmlib.train.fit: its overhead against a bare PyTorch loop, in one run.

    python benchmarks/train.py

Same model, data, optimiser, parameter groups, schedule and number of steps; the bare loop is the
textbook PyTorch loop (no progress bar, history, accuracy bookkeeping, hooks or checkpoints), kept
here as the reference that the book's one loop is measured against. Each is timed twice,
alternating five times, and the medians are compared (a busy moment then moves neither).
"""

import contextlib
import io
import statistics
import time

import torch
from torch import nn

from mmlib.data import make_dataset
from mmlib.encoders import BagOfEmbeddings, ImageCNN
from mmlib.models import MultimodalModel
from mmlib.train import fit, learning_rate, parameter_groups


def make_model(vocab: int) -> MultimodalModel:
    torch.manual_seed(0)
    return MultimodalModel({"image": ImageCNN(32, channels=(16, 32)), "text": BagOfEmbeddings(vocab, 64)}, 2, "lowrank")


def bare_loop(model, data, epochs, batch_size, lr) -> float:
    start = time.perf_counter()
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-4), lr=lr)
    steps = epochs * -(-len(data) // batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate(step, steps, 1.0))
    for epoch in range(epochs):
        for batch in data.batches(batch_size, shuffle=True, seed=epoch):
            loss = nn.functional.cross_entropy(model(batch), batch["match"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
    return time.perf_counter() - start


def main() -> None:
    data = make_dataset("matching", 4000, seed=0)
    vocab, epochs, batch_size, lr = len(data.tokenizer), 2, 128, 5e-3
    bare, with_fit = [], []
    for _ in range(5):
        bare.append(bare_loop(make_model(vocab), data, epochs, batch_size, lr))
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar runs, but out of sight
            with_fit.append(fit(make_model(vocab), data, "match", epochs=epochs, batch_size=batch_size, lr=lr,
                                device="cpu", progress=True, desc="fit (benchmark)").seconds)
    fit_s, bare_s = statistics.median(with_fit), statistics.median(bare)
    print(f"training loop: fit {fit_s:.2f} s vs bare PyTorch loop {bare_s:.2f} s (medians of 5) "
          f"on the same {epochs * len(data):,} examples -> ratio {fit_s / bare_s:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
