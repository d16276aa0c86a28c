"""Benchmark rows for generation: text by mmlib.lm, images by mmlib.generate.

    python benchmarks/generate.py

Chapter 7's language model (its recipe, ``mmlib.recipes.VQA.lm``) continues 64 prompts of 10
tokens, after a prefix of 4 visual tokens, by 30 tokens, greedily, with and without the key-value
cache. Chapter 8's text-to-image model (the shape of ``GeneratorRecipe()``) draws 64 images with
classifier-free guidance at the book's weight (two network calls per step, batched as one) in 1,
10 and 50 Euler steps. Best of three runs each; the speed does not depend on the weights, so the
models are untrained.
"""

import time

import torch

from mmlib.generate import GUIDANCE, generate_images, generator_model
from mmlib.recipes import VQA
from mmlib.vlm import language_model


def main() -> None:
    torch.manual_seed(0)
    lm = language_model(VQA).eval()
    prompts, prefix = torch.randint(4, lm.vocab_size, (64, 10)), torch.randn(64, 4, lm.dim)
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
    model = generator_model().eval()
    prompts = ["a large red circle in the top left", "a blue star"] * 32
    for steps in (1, 10, 50):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            generate_images(model, prompts, steps=steps, guidance=GUIDANCE)
            best = min(best, time.perf_counter() - start)
        print(f"text to image (chapter 8's model, 16 x 16, guided): {len(prompts) / best:,.0f} images/s "
              f"with {steps} sampler step{'s' if steps > 1 else ''}")


if __name__ == "__main__":
    main()
