"""Decoding against hallucination (chapter 9): visual contrastive decoding.

VCD (Leng et al. 2024) decodes every word from two views of the image: the image itself, v, and
a distorted one, v', where the picture's evidence is weak and the language model's habits
remain. A word that the distorted image supports as much as the real one comes from habit, not
from the picture; contrasting the two,

    softmax[(1 + alpha) l(y | v, x) - alpha l(y | v', x)],

promotes the words the real image adds. An adaptive plausibility cut-off keeps only the words
with p(y | v, x) >= cutoff * max p(y | v, x), so that the contrast cannot promote a word the
model itself finds implausible. ``contrastive_describe`` decodes so; the distortion is
``distort`` (Gaussian noise, as in the paper) or no image at all (the blind LM).
"""

from __future__ import annotations

import torch

from mmlib.data import IMAGE, WorldDataset
from mmlib.vlm.chat import chat_sequences
from mmlib.vlm.connectors import CrossAttentionConnector
from mmlib.vlm.model import VisionLanguageModel

CONTRASTS = ("noise", "blind")
"""What the image is contrasted with: the image diffused towards noise, or no image."""


def distort(images: torch.Tensor, noise: float, seed: int = 0) -> torch.Tensor:
    """VCD's distorted images: each image diffused part of the way to Gaussian noise,
    sqrt(1 - noise) x + sqrt(noise) eps (the forward process of a diffusion model; ``noise`` in
    [0, 1], 1 leaving noise alone), with eps drawn from a generator seeded by ``seed``."""
    if not 0 <= noise <= 1:
        raise ValueError(f"noise is the share of noise's variance, from 0 to 1; got {noise!r}")
    generator = torch.Generator(device=images.device).manual_seed(seed)
    eps = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (1 - noise) ** 0.5 * images + noise ** 0.5 * eps


def _check(model: VisionLanguageModel, alpha: float, cutoff: float, temperature: float, contrast: str) -> None:
    if isinstance(model.connector, CrossAttentionConnector):
        raise ValueError("contrastive decoding here needs a model whose image enters as prefix tokens "
                         "(not cross-attention)")
    if alpha < 0 or not 0 <= cutoff <= 1 or temperature < 0:
        raise ValueError(f"need alpha >= 0, cutoff in [0, 1] and temperature >= 0; got {alpha}, {cutoff} "
                         f"and {temperature}")
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}: choose one of {CONTRASTS}")


def contrastive_logits(real: torch.Tensor, other: torch.Tensor, alpha: float, cutoff: float) -> torch.Tensor:
    """VCD's next-word logits from the logits given the real image (``real``) and the distorted
    one (``other``), each (B, V): (1 + alpha) real - alpha other, with -inf wherever the real
    image's probability is below ``cutoff`` times its largest."""
    probs = real.softmax(-1)
    plausible = probs >= cutoff * probs.max(-1, keepdim=True).values
    return ((1 + alpha) * real - alpha * other).masked_fill(~plausible, float("-inf"))


@torch.no_grad()
def contrastive_describe(model: VisionLanguageModel, data: WorldDataset, alpha: float, *, cutoff: float = 0.1,
                         contrast: str = "noise", noise: float = 0.5, temperature: float = 0.0,
                         generator: torch.Generator | None = None, max_new: int = 24, batch_size: int = 256
                         ) -> list[str]:
    """``model``'s replies to ``data``'s instructions (its descriptions, for description data),
    decoded by VCD: ``contrastive_logits`` of the image and of its ``contrast`` ('noise':
    ``distort`` by ``noise``; 'blind': no image), greedy or sampled at ``temperature``. With
    ``alpha`` = 0 the second view is not computed and decoding is the model's own (the cut-off
    then only trims sampling's tail)."""
    _check(model, alpha, cutoff, temperature, contrast)
    was_training = model.training
    model.eval()
    device = next(model.lm.parameters()).device
    tok, lm = model.tokenizer, model.lm
    prompts, _ = chat_sequences(tok, list(data.texts))
    lengths = (prompts != tok.pad_id).sum(1)
    if len(set(lengths.tolist())) != 1:
        raise ValueError("contrastive_describe takes instructions of one length (e.g. description data)")
    prompts = prompts[:, :int(lengths[0])]
    replies = []
    for part in torch.arange(len(data)).split(batch_size):
        images, tokens = data.batch(part, device)[IMAGE], prompts[part].to(device)
        logits, past = lm(tokens, prefix=model.prefix(images, tokens))
        if alpha:
            blind = contrast == "blind"
            seen = None if blind else model.prefix(distort(images, noise, seed=int(part[0])), tokens)
            other_logits, other_past = lm(tokens, prefix=seen)
        done = torch.zeros(len(part), dtype=torch.bool, device=device)
        new = []
        for _ in range(max_new):
            scores = contrastive_logits(logits[:, -1], other_logits[:, -1] if alpha else logits[:, -1],
                                        alpha, cutoff)
            if temperature == 0:
                nxt = scores.argmax(-1)
            else:
                nxt = torch.multinomial((scores / temperature).softmax(-1), 1, generator=generator)[:, 0]
            nxt = nxt.masked_fill(done, tok.eos_id)
            done |= nxt == tok.eos_id
            new.append(nxt)
            if bool(done.all()):
                break
            logits, past = lm(nxt[:, None], past=past)
            if alpha:
                other_logits, other_past = lm(nxt[:, None], past=other_past)
        for ids in torch.stack(new, 1).tolist():
            replies.append(tok.decode(ids[:ids.index(tok.eos_id)] if tok.eos_id in ids else ids))
    model.train(was_training)
    return replies


__all__ = ["CONTRASTS", "distort", "contrastive_logits", "contrastive_describe"]
