"""Datasets from the world, one per task, with seeded i.i.d. and compositional splits.

Introduced in the chapter *A world to learn from*; used by every chapter that trains.

Tasks (``make_dataset(task, ...)``):

- ``'attributes'``: image -> colour, shape, size labels
- ``'pairs'``:      image + caption (contrastive pretraining), with attribute labels for evaluation
- ``'matching'``:   image + caption -> does it match? Half the captions are hard negatives in which
  exactly one attribute (colour, shape or size) was changed
- ``'qa'``:         image + question -> answer (two-object scenes by default)
- ``'trimodal'``:   image + caption + sound, with attribute labels

Splits: ``'train'`` and ``'test'`` are drawn from the same distribution with different seeds (i.i.d.);
with ``held_out`` pairs of (colour, shape), neither split contains them and ``'heldout'`` contains
only them: a compositional split for zero-shot tests. Images are stored as uint8 (a 50,000-image
32x32 dataset takes 154 MB) and turned into floats per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

from mmlib import world
from mmlib.text import Tokenizer

TASKS = ("attributes", "pairs", "matching", "qa", "trimodal")
SPLITS = ("train", "test", "heldout")
ANSWERS = world.COLORS + world.ALL_SHAPES + world.SIZES + world.NUMBER_WORDS[1:] + ("yes", "no")
"""Every answer a question can have; a QA model classifies into these."""

IMAGE, TOKENS, LENGTHS, SOUND = "image", "tokens", "lengths", "sound"
BATCH_KEYS = {"image": IMAGE, "text": TOKENS, "audio": SOUND}
"""The batch contract: which entry of a batch holds which modality (images (B, 3, S, S) floats in
[0, 1]; token ids (B, L) with 0 as padding, and their ``lengths``; waveforms (B, samples)). Every
batch also carries the dataset's labels under their own names ('color', 'match', 'answer', ...)."""

_SPLIT_SEED = {"train": 0, "test": 1_000_003, "heldout": 2_000_003}


@dataclass
class WorldDataset(torch.utils.data.Dataset):
    """Tensors for one task and split. ``ds[i]`` is a dict; ``ds.batches(...)`` yields ready batches."""

    images: torch.Tensor  # (n, 3, S, S) uint8
    labels: dict[str, torch.Tensor]  # each (n,)
    texts: list[str] = field(default_factory=list)
    tokens: torch.Tensor | None = None  # (n, L) long, 0 = padding
    lengths: torch.Tensor | None = None  # (n,)
    sounds: torch.Tensor | None = None  # (n, samples) float
    scenes: world.Scenes | None = None
    tokenizer: Tokenizer | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return self.batch(torch.as_tensor([i]), squeeze=True)

    def batch(self, index, device=None, squeeze: bool = False) -> dict:
        """The examples at ``index`` as one batch: a dict with the keys of ``BATCH_KEYS`` that this
        dataset has, plus its labels. Images become floats in [0, 1]."""
        index = torch.as_tensor(index, dtype=torch.long)
        if index.numel() == 0:
            raise ValueError("a batch needs at least one example")
        out = {IMAGE: self.images[index].float().div_(255)}
        if self.tokens is not None:
            longest = int(self.lengths[index].max())
            out[TOKENS], out[LENGTHS] = self.tokens[index, :longest], self.lengths[index]
        if self.sounds is not None:
            out[SOUND] = self.sounds[index]
        out.update({name: value[index] for name, value in self.labels.items()})
        if squeeze:
            out = {k: v[0] for k, v in out.items()}
        if device is not None:
            out = {k: v.to(device, non_blocking=True) for k, v in out.items()}
        return out

    def float_images(self) -> torch.Tensor:
        """Every image as floats in [0, 1], (n, 3, S, S): what a model reads (chapters 7 and 8)."""
        return self.images.float() / 255

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, device=None,
                drop_last: bool = False) -> Iterator[dict]:
        """Yield batches (dicts of tensors) by slicing the stored tensors: no per-item collation."""
        self.steps_per_epoch(batch_size)  # checks batch_size
        order = self._order(seed) if shuffle else torch.arange(len(self))
        stop = len(self) - batch_size + 1 if drop_last else len(self)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start:start + batch_size], device)

    def _order(self, seed: int) -> torch.Tensor:
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))

    def steps_per_epoch(self, batch_size: int, drop_last: bool = False) -> int:
        """How many batches of ``batch_size`` make one pass over the data."""
        if not isinstance(batch_size, int) or not 0 < batch_size:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if drop_last and batch_size > len(self):
            raise ValueError(f"the batch size {batch_size} is larger than the dataset ({len(self)} examples)")
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def stream(self, batch_size: int, *, seed: int = 0, start: int = 0, drop_last: bool = False,
               rank: int = 0, world_size: int = 1, device=None) -> Iterator[dict]:
        """Batches for a training loop counted in steps: endless, from step ``start`` on.

        Epoch e is shuffled with seed ``seed * 1000 + e`` (the order of ``batches(seed=...)``), so
        the batch of any step is a function of the step alone: a resumed run sees exactly the
        batches an uninterrupted run would. With ``world_size`` processes, ``batch_size`` is the
        global batch and each process gets its ``rank``'s slice of it (chapter 6)."""
        per_epoch = self.steps_per_epoch(batch_size, drop_last)
        if world_size > 1 and (not drop_last or batch_size % world_size):
            raise ValueError(f"with {world_size} processes the global batch size ({batch_size}) must be a "
                             f"multiple of {world_size} and drop_last=True, so every process gets a full share")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        local = batch_size // world_size
        step, order, epoch = start, None, None
        while True:
            if step // per_epoch != epoch:
                epoch = step // per_epoch
                order = self._order(seed * 1000 + epoch)
            first = (step % per_epoch) * batch_size
            rows = order[first:first + batch_size]
            yield self.batch(rows[rank * local:(rank + 1) * local] if world_size > 1 else rows, device)
            step += 1

    def subset(self, indices) -> "WorldDataset":
        """A new dataset with only the given examples (in that order)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.numel() == 0:
            raise ValueError("a subset needs at least one example")
        if int(index.max()) >= len(self) or int(index.min()) < -len(self):
            raise ValueError(f"index {int(index.max())} is out of range for a dataset of {len(self)}")
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return WorldDataset(self.images[index], {k: v[index] for k, v in self.labels.items()},
                            [self.texts[i] for i in index.tolist()] if self.texts else [],
                            pick(self.tokens), pick(self.lengths), pick(self.sounds),
                            self.scenes[index.numpy()] if self.scenes is not None else None, self.tokenizer)

    def nbytes(self) -> int:
        """Memory held by the tensors of this dataset, in bytes."""
        tensors = [self.images, self.tokens, self.lengths, self.sounds, *self.labels.values()]
        return sum(t.element_size() * t.nelement() for t in tensors if t is not None)


def render_uint8(scenes: world.Scenes, image_size: int, domain: str, chunk: int = 4096) -> torch.Tensor:
    """Render in chunks straight to uint8, so peak memory stays near the size of the result."""
    out = torch.empty((len(scenes), 3, image_size, image_size), dtype=torch.uint8)
    for start in range(0, len(scenes), chunk):
        part = world.render_images(scenes[start:start + chunk], image_size, domain)
        out[start:start + chunk] = part.mul_(255).round_().to(torch.uint8)
    return out


def _attribute_labels(scenes: world.Scenes, slot: int = 0) -> dict[str, torch.Tensor]:
    return {"color": torch.as_tensor(scenes.color[:, slot]), "shape": torch.as_tensor(scenes.shape[:, slot]),
            "size": torch.as_tensor(scenes.size[:, slot]), "count": torch.as_tensor(scenes.count)}


def hard_negatives(scenes: world.Scenes, seed: int = 0, exclude: Iterable[tuple[str, str]] = ()) -> world.Scenes:
    """A copy of the scenes with exactly one attribute (colour, shape or size) of the first object
    changed to another value; never into an ``exclude`` pair. Returns the changed scenes."""
    rng = np.random.default_rng(seed)
    exclude = {(world.COLORS.index(c), scenes.shapes.index(s)) for c, s in exclude if s in scenes.shapes}
    neg = scenes[:]
    n = len(scenes)
    which = rng.integers(0, 3, size=n)  # 0 colour, 1 shape, 2 size
    for i in range(n):
        c, s = neg.color[i, 0], neg.shape[i, 0]
        if which[i] == 2:
            neg.size[i, 0] = 1 - neg.size[i, 0]
            continue
        if which[i] == 0:
            options = [k for k in range(len(world.COLORS)) if k != c and (k, s) not in exclude]
            neg.color[i, 0] = options[rng.integers(len(options))]
        else:
            options = [k for k in range(len(scenes.shapes)) if k != s and (c, k) not in exclude]
            neg.shape[i, 0] = options[rng.integers(len(options))]
    return neg


def make_dataset(task: str, n: int, *, split: str = "train", held_out: Iterable[tuple[str, str]] = (),
                 seed: int = 0, image_size: int = 32, domain: str = "clean", n_objects=None,
                 distractors: float = 0.0, language: str = "en", shapes: Iterable[str] = world.SHAPES,
                 tokenizer: Tokenizer | None = None, sound: bool = False,
                 question_types: Iterable[str] = world.QUESTION_TYPES) -> WorldDataset:
    """Build the dataset for ``task`` and ``split`` (see the module docstring). Seeded and reproducible.

    sound: also render each scene's sound (batches then carry ``'sound'``); 'trimodal' always does.
    question_types: for 'qa', which kinds of question to ask (see ``world.questions``).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    held_out = frozenset(tuple(p) for p in held_out)
    if split == "heldout" and not held_out:
        raise ValueError("split='heldout' needs held_out pairs, e.g. held_out=world.default_held_out()")
    if n_objects is None:
        n_objects = 2 if task == "qa" else 1
    if task == "matching" and n_objects != 1:
        raise ValueError(f"the matching task uses one-object scenes, got n_objects={n_objects!r}")
    if language not in ("en", "zh"):
        raise ValueError(f"language must be 'en' or 'zh', got {language!r}")
    split_seed = seed + _SPLIT_SEED[split]
    scene_options = dict(shapes=tuple(shapes), distinct=(task == "qa" or n_objects != 1))  # unambiguous references
    if split == "heldout":
        scene_options["only"] = held_out
    else:
        scene_options["exclude"] = held_out
    scenes = world.sample_scenes(n, n_objects, seed=split_seed, **scene_options)
    images = render_uint8(scenes, image_size, domain)
    labels = _attribute_labels(scenes)
    if tokenizer is None:
        tokenizer = Tokenizer.for_world(language)
    texts: list[str] = []
    sounds = None

    if task in ("pairs", "trimodal"):
        texts = (world.captions(scenes, seed=split_seed + 1, distractors=distractors) if language == "en"
                 else world.chinese_captions(scenes, seed=split_seed + 1))
    elif task == "matching":
        negatives = hard_negatives(scenes, seed=split_seed + 2, exclude=() if split == "heldout" else held_out)
        is_match = np.random.default_rng(split_seed + 3).random(n) < 0.5
        described = scenes[:]
        for name in ("color", "shape", "size"):
            getattr(described, name)[~is_match] = getattr(negatives, name)[~is_match]
        texts = (world.captions(described, seed=split_seed + 1, distractors=distractors) if language == "en"
                 else world.chinese_captions(described, seed=split_seed + 1))
        labels["match"] = torch.as_tensor(is_match.astype(np.int64))
    elif task == "qa":
        if language != "en":
            raise ValueError("questions are English only: use language='en' for task='qa'")
        qa = world.questions(scenes, seed=split_seed + 1, types=question_types,
                             exclude=held_out if split != "heldout" else ())
        texts = [q for q, _ in qa]
        labels["answer"] = torch.tensor([ANSWERS.index(a) for _, a in qa])
    if sound or task == "trimodal":
        sounds = world.render_sounds(scenes)
    tokens = lengths = None
    if texts:
        tokens, lengths = tokenizer.batch(texts)
    return WorldDataset(images, labels, texts, tokens, lengths, sounds, scenes, tokenizer)


def few_shot_indices(labels: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``k`` examples of every class present in ``labels`` (seeded, balanced)."""
    if not isinstance(k, int) or k <= 0:
        raise ValueError(f"k (examples per class) must be a positive integer, got {k!r}")
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < k:
            raise ValueError(f"class {c} has only {len(members)} examples, fewer than k={k}: "
                             "use a larger dataset or a smaller k")
        picked.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(picked)


__all__ = ["TASKS", "SPLITS", "ANSWERS", "BATCH_KEYS", "WorldDataset", "render_uint8", "hard_negatives",
           "make_dataset", "few_shot_indices"]
