"""The vision-language model (chapter 7): vision encoder (region features) -> connector -> the
language model that writes the answer; ``chat`` asks it about one image.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.nn import functional as F

from mmlib.data import IMAGE, TOKENS, WorldDataset
from mmlib.encoders import Encoder, check_images
from mmlib.lm import LanguageModel
from mmlib.text import Tokenizer
from mmlib.freezing import lock
from mmlib.vlm.chat import CHAT_TOKENS, chat_sequences
from mmlib.vlm.connectors import Connector, CrossAttentionConnector

REGIONS = "regions"
"""The batch entry of precomputed region features (``VisionLanguageModel.with_regions``)."""


class VisionLanguageModel(nn.Module):
    """vision encoder (region features) -> connector -> language model.

    ``loss(batch)`` is next-token cross-entropy on the assistant's tokens only; ``answer``
    generates replies. The vision encoder is frozen (``lock``) unless ``freeze_vision=False``.
    ``blind=True`` hides the image (the same LM answering from language alone)."""

    def __init__(self, vision: Encoder, connector: Connector, lm: LanguageModel, tokenizer: Tokenizer,
                 freeze_vision: bool = True):
        super().__init__()
        missing = [t for t in CHAT_TOKENS if t not in tokenizer.stoi]
        if missing:
            raise ValueError(f"the tokenizer lacks the role tokens {missing}: use chat_tokenizer()")
        if len(tokenizer) != lm.vocab_size:
            raise ValueError(f"the LM has {lm.vocab_size} token embeddings, the tokenizer {len(tokenizer)} tokens")
        self.vision, self.connector, self.lm, self.tokenizer = vision, connector, lm, tokenizer
        if freeze_vision:
            lock(self.vision)
        self.assistant_id = tokenizer.stoi["<assistant>"]

    def regions(self, images: torch.Tensor) -> torch.Tensor:
        """The vision encoder's region features (B, N, d): chapter 4's 8 x 8 grid."""
        check_images(images)
        return self.vision.encode(images).tokens

    def instruction(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean word embedding of each instruction (the tokens before ``<assistant>``)."""
        before = (torch.cumsum((tokens == self.assistant_id).long(), 1) == 0) & (tokens != self.tokenizer.pad_id)
        words = self.lm.tokens(tokens) * before.unsqueeze(-1)
        return words.sum(1) / before.sum(1, keepdim=True).clamp_min(1)

    def prefix(self, images: torch.Tensor | None, tokens: torch.Tensor, regions: torch.Tensor | None = None):
        """Visual tokens (B, M, D) for the sequence (None for cross-attention, or blind).
        ``regions``: the vision encoder's features, if already computed (``with_regions``)."""
        if images is None and regions is None:
            if isinstance(self.connector, CrossAttentionConnector):
                raise ValueError("a cross-attention model cannot run blind; its LM alone can")
            return None
        instruction = self.instruction(tokens) if self.connector.uses_instruction else None
        regions = self.regions(images) if regions is None else regions.float()
        return self.connector(regions, instruction)

    @torch.no_grad()
    def with_regions(self, data: WorldDataset, batch_size: int = 256, dtype=torch.float16) -> WorldDataset:
        """A copy of ``data`` whose batches also carry the frozen vision encoder's region features
        (label ``'regions'``, computed once, stored as ``dtype``): training then skips the tower.
        Valid for any model with the same frozen tower (a copy of it, as each connector here has)."""
        if any(p.requires_grad for p in self.vision.parameters()):
            raise ValueError("cached region features need a frozen vision encoder (freeze_vision=True): "
                             "a tower that trains changes its features every step")
        was_training = self.vision.training
        self.vision.eval()
        device = next(self.vision.parameters()).device
        features = torch.cat([self.regions(data.batch(part, device)[IMAGE]).to("cpu", dtype)
                              for part in torch.arange(len(data)).split(batch_size)])
        self.vision.train(was_training)
        return dataclasses.replace(data, labels={**data.labels, REGIONS: features})

    def adapters(self):
        return list(self.connector.blocks) if isinstance(self.connector, CrossAttentionConnector) else None

    def forward(self, images: torch.Tensor | None, tokens: torch.Tensor, regions: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits (B, T, V) for the text positions: logits[:, j] predicts tokens[:, j + 1]."""
        visual = self.prefix(images, tokens, regions)
        logits, _ = self.lm(tokens, prefix=visual, adapters=self.adapters())
        return logits if visual is None else logits[:, visual.shape[1]:]

    def loss(self, batch: dict) -> dict:
        tokens, start = batch[TOKENS], batch["answer_start"]
        logits = self(batch[IMAGE], tokens, batch.get(REGIONS))[:, :-1]
        targets = tokens[:, 1:]
        position = torch.arange(targets.shape[1], device=tokens.device)[None]
        answer = (position >= (start[:, None] - 1)) & (targets != self.tokenizer.pad_id)
        value = F.cross_entropy(logits[answer], targets[answer])
        first = position == (start[:, None] - 1)
        correct = (logits.argmax(-1) == targets)[first].float().mean().detach()
        return {"loss": value, "first_token_accuracy": correct}

    @torch.no_grad()
    def answer(self, images: torch.Tensor | None, questions: Sequence[str], max_new: int = 12,
               batch_size: int = 256, stop: bool = True, **sampling) -> list[str]:
        """Generated replies to ``questions`` about ``images`` (greedy unless ``temperature``).
        Prompts of equal length are generated together. With ``stop=False`` every reply runs to
        ``max_new`` tokens, past its end (to time generation at a fixed length)."""
        was_training = self.training
        self.eval()
        device = next(self.lm.parameters()).device
        prompts, _ = chat_sequences(self.tokenizer, list(questions))
        lengths = (prompts != self.tokenizer.pad_id).sum(1)
        replies: list[str | None] = [None] * len(questions)
        for length in lengths.unique().tolist():
            rows = torch.nonzero(lengths == length).flatten()
            for part in rows.split(batch_size):
                tokens = prompts[part, :length].to(device)
                visual = self.prefix(None if images is None else images[part].to(device), tokens)
                new, _ = self.lm.generate(tokens, max_new, prefix=visual, adapters=self.adapters(),
                                          eos_id=self.tokenizer.eos_id if stop else None, **sampling)
                for r, ids in zip(part.tolist(), new.tolist()):
                    ids = ids[:ids.index(self.tokenizer.eos_id)] if self.tokenizer.eos_id in ids else ids
                    replies[r] = self.tokenizer.decode(ids)
        self.train(was_training)
        return replies


def chat(model: VisionLanguageModel, image: torch.Tensor, question: str, show: bool = True, **sampling) -> str:
    """Ask ``model`` one question about one image (3, H, W) in [0, 1]; returns the reply and, with
    ``show``, draws the image with the exchange as its title."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected one image of shape (3, H, W), got {shape}")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("ask a question, e.g. 'what colour is the square ?'")
    reply = model.answer(image[None], [question], **sampling)[0]
    if show:
        fig, ax = plt.subplots(figsize=(2.6, 2.9))
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
        ax.set_title(f"{question}\n→ {reply}", fontsize=9, fontweight="normal")
        ax.axis("off")
    return reply



__all__ = ["REGIONS", "VisionLanguageModel", "chat"]
