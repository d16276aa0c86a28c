"""A multimodal large language model at toy scale (chapter 7): a vision encoder, a connector that
turns image features into tokens, and a decoder-only language model that writes the answer.

The recipe of LLaVA, BLIP-2, Flamingo and their successors, in the order the chapter builds it:

- **The vision encoder** is chapter 4's CLIP image tower: its 8 x 8 grid of region features,
  frozen.
- **Connectors** (one interface: region features (B, N, d) and the instruction's mean word
  embedding (B, D) -> visual tokens (B, M, D) placed before the text): ``LinearConnector``
  (LLaVA), ``MLPConnector`` (LLaVA-1.5), ``Resampler`` (m learned queries that cross-attend to
  the grid: Perceiver / Q-Former, fewer tokens), ``InstructionResampler`` (the queries also read
  the instruction: InstructBLIP). ``GatedCrossAttention`` is the other way to connect
  (Flamingo): no visual tokens, but a cross-attention layer before every LM block whose tanh
  gate starts at 0, so the untrained model is exactly the text-only LM.
- **The language model** is ``mmlib.lm.LanguageModel``, pretrained on the world's text first.
- **LoRA** (``add_lora``/``merge_lora``): low-rank adapters, the efficient alternative to
  tuning every weight of the LM.
- **Chat data** (``instruction_data``, also the text the LM is pretrained on): ``<user> question <assistant> answer <eos>``; the loss
  covers only the assistant's tokens.
- **The book's describer** (``DescriberRecipe``, ``train_describer``, ``pretrained_describer``):
  chapter 7b's fully tuned model as one recipe, shipped with mmlib so that chapter 8 can read
  its generated images with it.
- **Evaluation against the world's exact truth**: accuracy per question type, POPE probes with
  random, popular and adversarial negatives (``pope_probes``/``pope_scores``), and for
  descriptions (``description_data``, chapter 7b) object F1 (``description_scores``) and CHAIR
  (``chair``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmlib import world
from mmlib.data import ANSWERS, IMAGE, TOKENS, WorldDataset, make_dataset
from mmlib.encoders import Encoder, check_images
from mmlib.lm import LanguageModel
from mmlib.text import Tokenizer, world_words
from mmlib.train import lock

REGIONS = "regions"
"""The batch entry of precomputed region features (``VisionLanguageModel.with_regions``)."""

CHAT_TOKENS = ("<image>", "<user>", "<assistant>")
"""Role tokens added to the world's vocabulary for chat-style sequences."""

QUESTION_KINDS = {"what colour": "color", "what shape": "shape", "what size": "size", "how many": "count",
                  "is there": "exists"}
"""How each question starts -> its type (``world.QUESTION_TYPES``)."""


def chat_tokenizer() -> Tokenizer:
    """The world's English words plus the role tokens ``<image>``, ``<user>``, ``<assistant>``."""
    return Tokenizer(world_words() + list(CHAT_TOKENS), strict=True)


def question_type(question: str) -> str:
    """'what colour is the square ?' -> 'color'."""
    for start, kind in QUESTION_KINDS.items():
        if question.startswith(start):
            return kind
    raise ValueError(f"not a question of the world: {question!r}")


# ---------------------------------------------------------------------------------------------
# Chat data
# ---------------------------------------------------------------------------------------------

def chat_sequences(tokenizer: Tokenizer, instructions: Sequence[str], answers: Sequence[str] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of ``<user> instruction <assistant> answer <eos>`` (right-padded), and for each
    sequence the position of its first answer token (where the loss starts). Without
    ``answers``, the prompts alone (ending with ``<assistant>``), ready for generation."""
    if isinstance(instructions, str) or not len(instructions):
        raise ValueError("give a non-empty list of instructions")
    if answers is not None and len(answers) != len(instructions):
        raise ValueError(f"{len(instructions)} instructions but {len(answers)} answers")
    rows, starts = [], []
    for i, text in enumerate(instructions):
        if not text.strip():
            raise ValueError("an instruction is empty: ask something, e.g. 'what colour is the square ?'")
        prompt = tokenizer.encode(f"<user> {text} <assistant>")
        reply = [] if answers is None else tokenizer.encode(answers[i]) + [tokenizer.eos_id]
        rows.append(prompt + reply)
        starts.append(len(prompt))
    tokens = torch.full((len(rows), max(map(len, rows))), tokenizer.pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        tokens[r, :len(row)] = torch.tensor(row)
    return tokens, torch.tensor(starts)


def instruction_data(n: int, *, split: str = "train", seed: int = 0, held_out=(), n_objects=(1, 3),
                     question_types: Sequence[str] = world.QUESTION_TYPES,
                     tokenizer: Tokenizer | None = None) -> WorldDataset:
    """Visual questions as chat sequences: images of 1-3 objects, ``texts`` the questions,
    ``tokens`` the whole exchange, labels ``answer_start`` (where the loss starts), ``answer``
    (index into ``mmlib.data.ANSWERS``) and ``qtype`` (index into ``world.QUESTION_TYPES``)."""
    tokenizer = tokenizer or chat_tokenizer()
    qa = make_dataset("qa", n, split=split, seed=seed, held_out=held_out, n_objects=n_objects,
                      question_types=question_types)
    answers = [ANSWERS[i] for i in qa.labels["answer"]]
    tokens, starts = chat_sequences(tokenizer, qa.texts, answers)
    labels = {**qa.labels, "answer_start": starts,
              "qtype": torch.tensor([world.QUESTION_TYPES.index(question_type(q)) for q in qa.texts])}
    lengths = (tokens != tokenizer.pad_id).sum(1)
    return WorldDataset(qa.images, labels, qa.texts, tokens, lengths, None, qa.scenes, tokenizer)


DESCRIBE = "what is in the image ?"
"""The instruction that asks for a description (built from the world's own words)."""


def description_data(n: int, *, split: str = "train", seed: int = 0, held_out=(), n_objects=(1, 3),
                     tokenizer: Tokenizer | None = None) -> WorldDataset:
    """Descriptions as chat sequences: ``<user> what is in the image ? <assistant> caption <eos>``,
    the caption in the world's plain words (no synonyms, one word order, no positions), e.g.
    'a small red circle', 'the red circle is left of the blue square', 'three shapes : a ...'.
    ``texts`` are the instructions, ``labels['answer_start']`` where the loss starts, and
    ``descriptions_of(data.scenes)`` the reference descriptions."""
    tokenizer = tokenizer or chat_tokenizer()
    pairs = make_dataset("pairs", n, split=split, seed=seed, held_out=held_out, n_objects=n_objects)
    captions = descriptions_of(pairs.scenes)
    tokens, starts = chat_sequences(tokenizer, [DESCRIBE] * n, captions)
    labels = {"answer_start": starts}
    lengths = (tokens != tokenizer.pad_id).sum(1)
    return WorldDataset(pairs.images, labels, [DESCRIBE] * n, tokens, lengths, None, pairs.scenes, tokenizer)


def descriptions_of(scenes) -> list[str]:
    """The reference description of each scene: ``world.captions`` in its plainest form."""
    return world.captions(scenes, synonyms=False, vary_order=False, position=False)


def mix(*datasets: WorldDataset, seed: int = 0) -> WorldDataset:
    """One shuffled dataset of chat exchanges from several (e.g. questions and descriptions):
    images, texts, scenes and the labels they all have; tokens padded to the longest."""
    if not datasets:
        raise ValueError("give at least one dataset to mix")
    keys = set.intersection(*(set(d.labels) for d in datasets))
    if "answer_start" not in keys:
        raise ValueError("every dataset needs labels['answer_start'] (use instruction_data or description_data)")
    width = max(d.tokens.shape[1] for d in datasets)
    pad = datasets[0].tokenizer.pad_id
    tokens = torch.cat([F.pad(d.tokens, (0, width - d.tokens.shape[1]), value=pad) for d in datasets])
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
    scenes = world.Scenes.concatenate([d.scenes for d in datasets])[order.numpy()]
    texts = [t for d in datasets for t in d.texts]
    return WorldDataset(torch.cat([d.images for d in datasets])[order],
                        {k: torch.cat([d.labels[k] for d in datasets])[order] for k in sorted(keys)},
                        [texts[i] for i in order.tolist()], tokens[order],
                        torch.cat([d.lengths for d in datasets])[order], None, scenes, datasets[0].tokenizer)


# ---------------------------------------------------------------------------------------------
# Connectors
# ---------------------------------------------------------------------------------------------

class Connector(nn.Module):
    """Image region features (B, N, d_image) [+ instruction (B, D)] -> visual tokens (B, M, D)."""

    uses_instruction = False

    def __init__(self, image_dim: int, dim: int):
        super().__init__()
        self.image_dim, self.dim = image_dim, dim

    def tokens_for(self, regions: int) -> int:  # pragma: no cover - abstract
        """How many visual tokens ``regions`` image regions become."""
        raise NotImplementedError


class LinearConnector(Connector):
    """LLaVA: one linear map per region; every region becomes a token. ``pool=2`` first averages
    each 2 x 2 block of the grid (4x fewer tokens, as nanoVLM's pixel shuffle cuts SigLIP's)."""

    def __init__(self, image_dim: int, dim: int, pool: int = 1):
        super().__init__(image_dim, dim)
        if not isinstance(pool, int) or pool < 1:
            raise ValueError(f"pool must be a positive integer, got {pool!r}")
        self.pool = pool
        self.proj = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, dim))

    def pooled(self, regions: torch.Tensor) -> torch.Tensor:
        """(B, g*g, d) -> (B, (g/pool)^2, d): the mean of each
        pool x pool block of the grid."""
        if self.pool == 1:
            return regions
        b, n, d = regions.shape
        g = math.isqrt(n)
        if g * g != n or g % self.pool:
            raise ValueError(f"pool={self.pool} needs a square grid whose "
                             f"side it divides, got {n} regions")
        grid = regions.transpose(1, 2).reshape(b, d, g, g)
        return F.avg_pool2d(grid, self.pool).flatten(2).transpose(1, 2)

    def forward(self, regions, instruction=None):
        return self.proj(self.pooled(regions))

    def tokens_for(self, regions):
        return regions // self.pool ** 2


class MLPConnector(LinearConnector):
    """LLaVA-1.5: a two-layer MLP per region (``pool`` as for ``LinearConnector``)."""

    def __init__(self, image_dim: int, dim: int, pool: int = 1):
        super().__init__(image_dim, dim, pool)
        self.proj = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, dim), nn.GELU(), nn.Linear(dim, dim))


class Resampler(Connector):
    """Perceiver resampler / Q-Former in one layer: ``m`` learned queries cross-attend to the
    regions (with learned positions), so the LM sees ``m`` tokens however large the grid."""

    def __init__(self, image_dim: int, dim: int, m: int = 4, regions: int = 64, heads: int = 4):
        super().__init__(image_dim, dim)
        self.m = m
        self.queries = nn.Parameter(torch.randn(m, dim) * 0.1)
        self.norm = nn.LayerNorm(image_dim)
        self.keys, self.values = nn.Linear(image_dim, dim), nn.Linear(image_dim, dim)
        self.positions = nn.Parameter(torch.zeros(regions, dim))
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def queries_for(self, instruction: torch.Tensor | None, batch: int) -> torch.Tensor:
        return self.queries[None].expand(batch, -1, -1)  # (B, m, D)

    def attend(self, regions, instruction):
        x = self.norm(regions)
        q = self.queries_for(instruction, len(x))
        logits = torch.einsum("bmd,bnd->bmn", q, self.keys(x) + self.positions) / math.sqrt(self.dim)
        return q, logits, torch.einsum("bmn,bnd->bmd", logits.softmax(-1), self.values(x))

    def forward(self, regions, instruction=None):
        _, _, read = self.attend(regions, instruction)
        return self.out(read)

    def tokens_for(self, regions):
        return self.m


class InstructionResampler(Resampler):
    """InstructBLIP's idea in one layer: the queries are the instruction (through an MLP), varied
    by ``m`` learned multipliers, so they look for what the question asks about. Each token holds
    what a query read, its product with the query (how well it matched) and the best match
    score, plus the mean of all regions (for counting)."""

    uses_instruction = True

    def __init__(self, image_dim: int, dim: int, m: int = 4, regions: int = 64, heads: int = 4):
        super().__init__(image_dim, dim, m, regions, heads)
        self.ask = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.whole = nn.Linear(image_dim, dim)
        self.out = nn.Sequential(nn.Linear(3 * dim + 1, dim), nn.GELU(), nn.Linear(dim, dim))

    def queries_for(self, instruction, batch):
        if instruction is None:
            raise ValueError("an InstructionResampler needs the instruction's embedding")
        return self.ask(instruction)[:, None] * (1 + self.queries[None])  # (B, m, D)

    def forward(self, regions, instruction=None):
        q, logits, read = self.attend(regions, instruction)
        whole = self.whole(self.norm(regions)).mean(1, keepdim=True)
        whole = whole.expand(-1, self.m, -1)  # the whole image, per query
        peak = logits.amax(2, keepdim=True)  # how well the best region matched
        return self.out(torch.cat([read, read * q, whole, peak], -1))


class GatedCrossAttention(nn.Module):
    """Flamingo's gated cross-attention block, run before an LM block: the text attends to the
    image regions, y = x + tanh(a) * attn(x, regions), then y + tanh(b) * mlp(y). The gates a, b
    start at 0: at initialisation the block is the identity and the LM unchanged."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.attn_gate, self.mlp_gate = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
        self.context: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.context is None:
            raise ValueError("set the image context first (VisionLanguageModel does)")
        context = self.context.expand(len(x), -1, -1) if len(self.context) == 1 else self.context
        y, _ = self.attn(self.norm1(x), context, context, need_weights=False)
        x = x + torch.tanh(self.attn_gate) * y
        return x + torch.tanh(self.mlp_gate) * self.mlp(self.norm2(x))


class CrossAttentionConnector(Connector):
    """Flamingo-style: the regions (normalised, projected, with positions) become the context of
    one ``GatedCrossAttention`` block per LM block; no visual tokens enter the sequence."""

    def __init__(self, image_dim: int, dim: int, depth: int = 2, regions: int = 64, heads: int = 4):
        super().__init__(image_dim, dim)
        self.proj = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, dim))
        self.positions = nn.Parameter(torch.zeros(regions, dim))
        self.blocks = nn.ModuleList(GatedCrossAttention(dim, heads) for _ in range(depth))

    def forward(self, regions, instruction=None):
        context = self.proj(regions) + self.positions
        for block in self.blocks:
            block.context = context
        return None

    def tokens_for(self, regions):
        return 0


CONNECTORS = {"linear": LinearConnector, "mlp": MLPConnector, "resampler": Resampler,
              "instruction": InstructionResampler, "cross_attention": CrossAttentionConnector}


COMPARED = {"linear": ("linear", {"pool": 2}), "mlp": ("mlp", {"pool": 2}), "resampler": ("resampler", {"m": 4}),
            "instruction": ("instruction", {"m": 4}), "cross_attention": ("cross_attention", {})}
"""Chapter 7c's five connectors as (name, options): LLaVA's linear map and LLaVA-1.5's MLP on the
2 x 2-pooled grid (16 tokens), a resampler and the instruction-aware one (4), Flamingo's (0)."""


def make_connector(name: str, image_dim: int, dim: int, **options) -> Connector:
    """A connector by name: one of ``CONNECTORS``."""
    if name not in CONNECTORS:
        raise ValueError(f"unknown connector {name!r}: expected one of {tuple(CONNECTORS)}")
    return CONNECTORS[name](image_dim, dim, **options)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

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
        return WorldDataset(data.images, {**data.labels, REGIONS: features}, data.texts, data.tokens, data.lengths,
                            data.sounds, data.scenes, data.tokenizer)

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
               batch_size: int = 256, **sampling) -> list[str]:
        """Generated replies to ``questions`` about ``images`` (greedy unless ``temperature``).
        Prompts of equal length are generated together."""
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
                                          eos_id=self.tokenizer.eos_id, **sampling)
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


def language_model_loss(lm: LanguageModel, pad_id: int):
    """Next-token cross-entropy over every real token: the loss of text-only pretraining."""
    def loss(batch: dict) -> dict:
        tokens = batch[TOKENS]
        logits, _ = lm(tokens)
        return {"loss": F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=pad_id)}
    return loss


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------

class LoRALinear(nn.Module):
    """W x + (alpha / r) B A x with the pretrained W frozen, A (r x in) random, B (out x r) zero:
    at the start the layer computes exactly what W did (Hu et al. 2021)."""

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0):
        super().__init__()
        if r < 1:
            raise ValueError(f"the rank r must be at least 1, got {r}")
        self.base, self.scale = base.requires_grad_(False), alpha / r
        self.A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T

    def merged(self) -> nn.Linear:
        """One plain linear layer computing the same function (no extra cost at inference)."""
        layer = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(self.base.weight + self.scale * self.B @ self.A)
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer.to(self.base.weight.device)


def add_lora(lm: LanguageModel, r: int = 4, alpha: float = 8.0) -> LanguageModel:
    """Freeze ``lm`` and wrap the linear layers of its blocks (attention and MLP) in
    ``LoRALinear``; the embeddings and norms stay frozen. In place; returns ``lm``."""
    lm.requires_grad_(False)
    for block in lm.blocks:
        for parent in (block.attn, block.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, LoRALinear(child, r, alpha))
    return lm


def merge_lora(lm: LanguageModel) -> LanguageModel:
    """Replace every ``LoRALinear`` of ``lm`` by its merged linear layer. In place."""
    for module in list(lm.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return lm


# ---------------------------------------------------------------------------------------------
# Evaluation against the world's truth
# ---------------------------------------------------------------------------------------------

def accuracy_by_type(replies: Sequence[str], data: WorldDataset) -> dict[str, float]:
    """Exact-match accuracy of ``replies`` to ``data``'s questions, overall and per type."""
    if len(replies) != len(data):
        raise ValueError(f"{len(replies)} replies for {len(data)} questions")
    truth = [ANSWERS[i] for i in data.labels["answer"]]
    kinds = [world.QUESTION_TYPES[i] for i in data.labels["qtype"]]
    right = np.array([r.strip() == t for r, t in zip(replies, truth)])
    table = {"overall": float(right.mean())}
    for kind in world.QUESTION_TYPES:
        chosen = np.array([k == kind for k in kinds])
        if chosen.any():
            table[kind] = float(right[chosen].mean())
    return table


def majority_baseline(train: WorldDataset, test: WorldDataset) -> dict[str, float]:
    """The best a model that never looks can do: for each question type, always give the answer
    most frequent in ``train``; accuracy on ``test``, overall and per type."""
    replies = []
    best = {}
    for kind in range(len(world.QUESTION_TYPES)):
        answers = train.labels["answer"][train.labels["qtype"] == kind]
        if len(answers):
            best[kind] = ANSWERS[int(answers.mode().values)]
    replies = [best.get(int(k), "") for k in test.labels["qtype"]]
    return accuracy_by_type(replies, test)


POPE_STRATEGIES = ("random", "popular", "adversarial")


def pope_probes(scenes, strategy: str, seed: int = 0, popular: Sequence[tuple[str, str]] = ()
                ) -> list[tuple[str, str]]:
    """Two yes/no probes per scene (Li et al. 2023): 'is there a {colour} {shape} ?' for an
    object in the scene (yes) and for an absent pair (no), drawn by ``strategy``:
    'random' (any absent pair), 'popular' (the absent pair that comes first in ``popular``, the
    pairs ranked by frequency in the training data) or 'adversarial' (a colour and a shape that
    are both in the scene, but never together: a binding error; random if no such pair)."""
    if strategy not in POPE_STRATEGIES:
        raise ValueError(f"unknown POPE strategy {strategy!r}: expected one of {POPE_STRATEGIES}")
    if strategy == "popular" and not popular:
        raise ValueError("the popular strategy needs the pairs ranked by training frequency")
    rng = np.random.default_rng(seed)
    probes = []
    for i in range(len(scenes)):
        objects = scenes.objects(i)
        present = {(o["color"], o["shape"]) for o in objects}
        yes = objects[rng.integers(len(objects))]
        absent = [(c, s) for c in world.COLORS for s in scenes.shapes if (c, s) not in present]
        crossed = [(a["color"], b["shape"]) for a in objects for b in objects if (a["color"], b["shape"]) not in present]
        if strategy == "popular":
            no = next(p for p in popular if p not in present)
        elif strategy == "adversarial" and crossed:
            no = crossed[rng.integers(len(crossed))]
        else:
            no = absent[rng.integers(len(absent))]
        probes += [(f"is there a {yes['color']} {yes['shape']} ?", "yes"), (f"is there a {no[0]} {no[1]} ?", "no")]
    return probes


def pope_scores(replies: Sequence[str], truths: Sequence[str]) -> dict[str, float]:
    """POPE's numbers for yes/no replies: accuracy, precision, recall and F1 of 'yes', and the
    share of 'yes' answers (a model that hallucinates says yes too often)."""
    if len(replies) != len(truths) or not len(truths):
        raise ValueError(f"need one reply per probe: got {len(replies)} replies for {len(truths)} probes")
    said = np.array([r.strip() == "yes" for r in replies])
    true = np.array([t == "yes" for t in truths])
    tp, fp, fn = (said & true).sum(), (said & ~true).sum(), (~said & true).sum()
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {"accuracy": float((said == true).mean()), "precision": float(precision), "recall": float(recall),
            "f1": float(2 * precision * recall / max(precision + recall, 1e-12)), "yes_ratio": float(said.mean())}


def mentioned(text: str) -> list[tuple]:
    """The (colour, shape) pairs a description names, read back by ``world.parse_caption``
    (none when it cannot be read)."""
    try:
        return [(o.get("color"), o.get("shape")) for o in world.parse_caption(text)]
    except ValueError:
        return []


def description_scores(descriptions: Sequence[str], scenes) -> dict[str, float]:
    """Object precision, recall and F1 of descriptions read back with ``world.parse_caption``: an
    object counts as named correctly when its colour *and* shape are both right (a red square
    in a scene with a red circle and a blue square is a binding error, not half right)."""
    if len(descriptions) != len(scenes) or not len(scenes):
        raise ValueError(f"need one description per scene: got {len(descriptions)} for {len(scenes)} scenes")
    tp = fp = fn = 0
    for i, text in enumerate(descriptions):
        present = {(o["color"], o["shape"]) for o in scenes.objects(i)}
        said = set(mentioned(text))
        tp, fp, fn = tp + len(said & present), fp + len(said - present), fn + len(present - said)
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12)}


def chair(descriptions: Sequence[str], scenes) -> dict[str, float]:
    """CHAIR (Rohrbach et al. 2018) for descriptions of scenes: CHAIR_i, the share of mentioned
    objects (colour and shape) that are not in the scene; CHAIR_s, the share of descriptions
    with at least one such object. A description that names no object the parser can read
    counts as one hallucination."""
    if len(descriptions) != len(scenes):
        raise ValueError(f"{len(descriptions)} descriptions for {len(scenes)} scenes")
    named = hallucinated = bad = 0
    for i, text in enumerate(descriptions):
        present = {(o["color"], o["shape"]) for o in scenes.objects(i)}
        said = mentioned(text) or [(None, None)]  # nothing readable: counted as one made-up object
        wrong = sum(pair not in present for pair in said)
        named += len(said)
        hallucinated += wrong
        bad += wrong > 0
    return {"chair_i": hallucinated / max(named, 1), "chair_s": bad / len(descriptions)}


# ---------------------------------------------------------------------------------------------
# The book's describer: chapter 7b's recipe, trained once and shipped
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DescriberRecipe:
    """Chapter 7b's fully tuned model, the one that answers questions and describes scenes:
    chapter 4's CLIP image tower (frozen) -> an MLP connector over 2 x 2-pooled regions -> a
    2-block language model pretrained for ``lm_steps`` on the world's chat text, then tuned for
    ``steps`` on ``questions`` questions mixed with ``descriptions`` descriptions."""

    questions: int = 20_000
    descriptions: int = 10_000
    lm_steps: int = 200
    lm_batch_size: int = 64
    steps: int = 400
    batch_size: int = 48
    lr: float = 2e-3
    seed: int = 0


def _describer(tokenizer: Tokenizer, vision: Encoder, lm: LanguageModel | None = None) -> VisionLanguageModel:
    """The describer's architecture around ``vision`` (and ``lm``, if already built)."""
    lm = lm or LanguageModel(len(tokenizer), dim=128, depth=2, heads=4, max_len=48)
    return VisionLanguageModel(vision, make_connector("mlp", vision.dim, lm.dim, pool=2), lm, tokenizer)


def _describer_hint(recipe: DescriberRecipe) -> str:
    return "python benchmarks/train_describer.py"


def train_describer(recipe: DescriberRecipe = DescriberRecipe(), *, clip: nn.Module | None = None, device=None,
                    progress: bool = True) -> VisionLanguageModel:
    """Train chapter 7b's describer by ``recipe`` on top of ``clip`` (default: chapter 4's
    ``pretrained_clip()``), whose image tower is copied and frozen. The caller's random numbers
    are left as they were. Returns the model in evaluation mode."""
    import copy

    from mmlib.pretrain import pretrained_clip
    from mmlib.train import Optimisation, fit_steps

    clip = clip if clip is not None else pretrained_clip(device=device, progress=progress)
    tok = chat_tokenizer()
    common = dict(held_out=world.default_held_out(), tokenizer=tok)
    s = recipe.seed
    text = mix(instruction_data(recipe.questions // 2, seed=s + 1, **common),
               description_data(recipe.descriptions // 2, seed=s + 4, **common), seed=s + 1)
    tuning = mix(instruction_data(recipe.questions, seed=s, **common),
                 description_data(recipe.descriptions, seed=s + 2, **common), seed=s)
    with torch.random.fork_rng(devices=[]):  # chapter 7b's order of random draws
        torch.manual_seed(s)
        lm = LanguageModel(len(tok), dim=128, depth=2, heads=4, max_len=48)
        fit_steps(lm, text, steps=recipe.lm_steps, batch_size=recipe.lm_batch_size, optim=Optimisation(lr=3e-3),
                  loss=language_model_loss(lm, tok.pad_id), seed=s, device=device, progress=progress,
                  desc="language model")
        torch.manual_seed(s + 1)
        model = _describer(tok, copy.deepcopy(clip.image_encoder), lm)
        fit_steps(model, tuning, steps=recipe.steps, batch_size=recipe.batch_size,
                  optim=Optimisation(lr=recipe.lr, lr_scale={"connector": 3.0}, clip_grad=None, weight_decay=0.01),
                  seed=s, device=device, progress=progress, desc="tuning")
    return model.eval()


def pretrained_describer(recipe: DescriberRecipe = DescriberRecipe(), *, path=None, device=None
                         ) -> VisionLanguageModel:
    """Chapter 7b's describer trained by ``recipe``, loaded from the weights shipped with mmlib
    (its frozen copy of chapter 4's image tower included, so it matches on any machine). It reads
    32-pixel images. A missing file or one trained by another recipe raises a ValueError that
    says how to train it again."""
    from mmlib import shipped
    from mmlib.pretrain import image_tower
    from mmlib.train import default_device

    model = _describer(chat_tokenizer(), image_tower())
    shipped.load(model, path if path is not None else shipped.path_of("describer"), asdict(recipe),
                 _describer_hint(recipe))
    return model.to(device or default_device()).eval()


def describer_record(recipe: DescriberRecipe = DescriberRecipe()) -> dict:
    """What the shipped describer's weights say about their training: 'recipe', 'seconds',
    'torch', 'cpus'."""
    from mmlib import shipped

    return shipped.record(shipped.path_of("describer"), _describer_hint(recipe))
