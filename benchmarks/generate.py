"""Benchmark row for mmlib.lm: generation speed with and without the key-value cache.

    python benchmarks/generate.py

Chapter 7's language model (dim 128, 2 blocks) continues 64 prompts of 10 tokens, after a prefix
of 4 visual tokens, by 30 tokens, greedily; the best of three runs of each.
"""

import time

import torch

from mmlib.lm import LanguageModel


def main() -> None:
    torch.manual_seed(0)
    lm = LanguageModel(96, dim=128, depth=2, heads=4, max_len=48).eval()
    prompts, prefix = torch.randint(4, 96, (64, 10)), torch.randn(64, 4, 128)
    rates = {}
    for cache in (True, False):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            lm.generate(prompts, 30, prefix=prefix, use_cache=cache)
            best = min(best, time.perf_counter() - start)
        rates[cache] = 64 * 30 / best
    print(f"generation (chapter 7's LM, 64 x 30 tokens): {rates[True]:,.0f} tokens/s with the key-value cache, "
          f"{rates[False]:,.0f} without -> {rates[True] / rates[False]:.1f}x")


if __name__ == "__main__":
    main()
