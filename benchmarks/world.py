"""Benchmark rows for mmlib.world: generation throughput and dataset memory.

    python benchmarks/world.py

Throughput: image (32x32) + caption + sound for 20,000 scenes, generated in batches of 2,000 as a
training loop would, after one warm-up batch. Memory: the tensors of a 50,000-image dataset.
"""

import resource
import time

import torch

from mmlib import world
from mmlib.data import make_dataset


def main() -> None:
    torch.manual_seed(0)
    world.generate(2000, seed=12345)  # warm-up: tone tables, allocator
    timings = {"scenes": 0.0, "images": 0.0, "captions": 0.0, "sounds": 0.0}
    total, batch = 20_000, 2_000
    for rep in range(total // batch):
        t0 = time.perf_counter()
        scenes = world.sample_scenes(batch, seed=rep)
        t1 = time.perf_counter()
        world.render_images(scenes, 32)
        t2 = time.perf_counter()
        world.captions(scenes, seed=rep, distractors=0.2)
        t3 = time.perf_counter()
        world.render_sounds(scenes)
        t4 = time.perf_counter()
        for key, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            timings[key] += dt
    seconds = sum(timings.values())
    print(f"world generation (image + caption + sound, 32x32): {total / seconds:,.0f} samples/s "
          f"({', '.join(f'{k} {total / v:,.0f}/s' for k, v in timings.items())})")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    ds = make_dataset("attributes", 50_000)
    print(f"50,000-image dataset: {ds.images.element_size() * ds.images.nelement() / 1e6:.1f} MB of images "
          f"(uint8), {ds.nbytes() / 1e6:.1f} MB in all, built in {time.perf_counter() - start:.1f} s; "
          f"process peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (was {before:.0f})")


if __name__ == "__main__":
    main()
