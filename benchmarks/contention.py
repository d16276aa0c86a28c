"""Benchmark row: a chapter's training while a second CPU-bound process runs (a loaded laptop).

    python benchmarks/contention.py

The workload is chapter 2's fused model (fit, 4 epochs of 4,000 matching examples), timed alone
and while another process trains the same kind of model with torch's default threads, once with torch's
default thread count and once with the thread policy of ``mmlib.setup`` (``mmlib.notebook``).
The slowdown factor is loaded time / time alone; a fair share of 2 cores with 2 jobs is 2x.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time

import torch

from mmlib.data import make_dataset
from mmlib.encoders import BagOfEmbeddings, ImageCNN
from mmlib.models import MultimodalModel
from mmlib.notebook import choose_threads
from mmlib.train import fit

HOG = """import torch
from mmlib.data import make_dataset
from mmlib.encoders import BagOfEmbeddings, ImageCNN
from mmlib.models import MultimodalModel
from mmlib.train import fit
data = make_dataset("matching", 4000, seed=1)
while True:  # another chapter training, with torch's default threads
    model = MultimodalModel({"image": ImageCNN(32, channels=(16, 32)),
                             "text": BagOfEmbeddings(len(data.tokenizer), 64)}, 2, "lowrank")
    fit(model, data, "match", epochs=1, device="cpu", progress=False)
"""


def workload(data) -> float:
    torch.manual_seed(0)
    model = MultimodalModel({"image": ImageCNN(32, channels=(16, 32)), "text": BagOfEmbeddings(len(data.tokenizer), 64)},
                            2, "lowrank")
    with contextlib.redirect_stderr(io.StringIO()):
        return fit(model, data, "match", epochs=4, batch_size=128, lr=1e-2, device="cpu", progress=False).seconds


def timed(data, threads: int, loaded: bool) -> float:
    torch.set_num_threads(threads)
    hog = subprocess.Popen([sys.executable, "-c", HOG]) if loaded else None
    try:
        if hog:
            time.sleep(8)  # let it import and start training
        return workload(data)
    finally:
        if hog:
            hog.kill()
            hog.wait()


def main() -> None:
    data = make_dataset("matching", 4000, seed=0)
    default = torch.get_num_threads()
    workload(data)  # warm-up
    rows = []
    for name, threads in (("torch default", default), ("mmlib.setup policy", None)):
        alone = timed(data, default if threads is None else threads, loaded=False)
        hog = subprocess.Popen([sys.executable, "-c", HOG])
        time.sleep(8)
        try:
            chosen = choose_threads() if threads is None else threads
        finally:
            hog.kill()
            hog.wait()
        loaded = timed(data, chosen, loaded=True)
        rows.append((name, chosen, alone, loaded))
    torch.set_num_threads(default)
    print(f"contention ({os.cpu_count()} CPUs; chapter 2's model, 4 epochs of 4,000 examples, "
          "a second chapter training):")
    for name, threads, alone, loaded in rows:
        print(f"  {name:<19} {threads} thread(s) under load: alone {alone:5.1f} s, loaded {loaded:5.1f} s "
              f"-> slowdown {loaded / alone:.1f}x (fair share 2x)")


if __name__ == "__main__":
    main()
