"""The judge (chapter 8): a classifier of the world's attributes trained on rendered images.
Because the world is procedural, it reads a generated image exactly: which colour-shape pairs
are in it, and the size and position of a single object; ``faithfulness`` and ``diversity``
score a generator by it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmlib import shipped, world
from mmlib.data import WorldDataset, render_uint8
from mmlib.generate.prompts import IMAGE_SIZE, asked_pairs, mixed_scenes, parse_prompt
from mmlib.recipes import JudgeRecipe
from mmlib.train import History, Optimisation, default_device, fit_steps

def judge_data(n: int, *, seed: int = 0, two_objects: float) -> WorldDataset:
    """Rendered 16-pixel scenes with what the judge must read: 'pairs' (n, 48) multi-hot over
    ``world.PAIRS``, 'objects', and for one-object scenes 'color', 'shape', 'size', 'position' (-1
    for two-object scenes). Every colour-shape pair occurs: the judge knows the whole world."""
    scenes = mixed_scenes(n, two_objects, seed=seed)
    pairs = torch.zeros(len(scenes), len(world.PAIRS))
    for j in range(scenes.shape.shape[1]):
        rows = np.nonzero(scenes.mask[:, j])[0]
        pairs[rows, scenes.color[rows, j] * len(world.SHAPES) + scenes.shape[rows, j]] = 1
    single = torch.as_tensor(scenes.count == 1)
    where = torch.as_tensor(world.position_index(scenes.x[:, 0], scenes.y[:, 0]))
    first = {"color": scenes.color[:, 0], "shape": scenes.shape[:, 0], "size": scenes.size[:, 0]}
    labels = {name: torch.where(single, torch.as_tensor(v, dtype=torch.long), -1) for name, v in first.items()}
    labels.update(pairs=pairs, objects=torch.as_tensor(scenes.count, dtype=torch.long),
                  position=torch.where(single, where, -1))
    images = render_uint8(scenes, IMAGE_SIZE, "clean")
    return WorldDataset(images, labels, scenes=scenes)


class Judge(nn.Module):
    """A small CNN (batch-normalised) that reads an image: for each of the 8 colours, which
    shape has that colour, or none (one 7-way choice per colour: the objects of a scene never
    share a colour); and the size and position word of a lone object. The evidence for a
    colour-shape pair is its strongest response anywhere in the image (max-pooling over
    places), so what the judge learns on one object it applies to each of two."""

    def __init__(self, width: int):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        w = width
        self.body = nn.Sequential(*block(3, w), *block(w, w), nn.MaxPool2d(2), *block(w, 2 * w), nn.MaxPool2d(2),
                                  *block(2 * w, 2 * w))
        self.n_shapes = len(world.SHAPES) + 1  # the last choice: no object of this colour
        self.where = nn.Conv2d(2 * w, len(world.PAIRS), 1)  # evidence for each pair at each place
        flat = 2 * w * (IMAGE_SIZE // 4) ** 2
        self.heads = nn.Linear(flat, len(world.COLORS) + len(world.SIZES) + len(world.POSITIONS))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"the judge reads images of shape (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(images.shape)}")
        features = self.body(images)
        pairs = self.where(features).amax((2, 3)).reshape(len(images), len(world.COLORS), len(world.SHAPES))
        out = self.heads(features.flatten(1)).split([len(world.COLORS), len(world.SIZES), len(world.POSITIONS)], 1)
        return {"colors": torch.cat([pairs, out[0][..., None]], 2), "size": out[1], "position": out[2]}

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self(batch["image"])
        single = batch["objects"] == 1
        pairs = batch["pairs"].reshape(len(single), len(world.COLORS), len(world.SHAPES))
        absent = pairs.sum(2, keepdim=True) == 0
        target = torch.cat([pairs, absent.to(pairs.dtype)], 2).argmax(2)  # (B, 8) shape index or 'none'
        terms = F.cross_entropy(out["colors"].flatten(0, 1), target.flatten())
        for name in ("size", "position"):
            terms = terms + F.cross_entropy(out[name][single], batch[name][single])
        return {"loss": terms}

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the images show: 'pairs' (B, 48) bool over ``world.PAIRS``, 'objects' (how many),
        and per image the 'color' and 'shape' of the most certain object, the 'size' and
        'position' indices."""
        was_training = self.training
        self.eval()
        out = self(images.to(next(self.parameters()).device))
        self.train(was_training)
        choice = out["colors"].argmax(2)  # (B, 8)
        present = choice < len(world.SHAPES)
        pairs = torch.zeros(len(choice), len(world.COLORS), len(world.SHAPES), dtype=torch.bool, device=choice.device)
        pairs.scatter_(2, choice.clamp(max=len(world.SHAPES) - 1)[..., None], present[..., None])
        color = out["colors"].softmax(2)[..., -1].argmin(1)  # the colour least likely absent
        shape = out["colors"][torch.arange(len(choice)), color, :-1].argmax(1)
        return {"pairs": pairs.flatten(1), "objects": present.sum(1), "color": color, "shape": shape,
                "size": out["size"].argmax(1), "position": out["position"].argmax(1)}


def judge_accuracy(judge: Judge, data: WorldDataset, images: torch.Tensor | None = None) -> dict[str, float]:
    """The judge (or another reader with its ``read``) on rendered images: per attribute of
    one-object scenes; 'pairs', the fraction of all scenes whose set of colour-shape pairs is
    read exactly; 'all', both. ``images`` replaces the renders (e.g. ``exact.degraded`` copies
    of them, in [0, 1]); the truth stays ``data``'s labels."""
    if images is None:
        images = data.images.float() / 255
    elif len(images) != len(data):
        raise ValueError(f"images replace data's renders one for one: got {len(images)} for {len(data)} scenes")
    read = judge.read(images)
    truth = {k: v.to(read["color"].device) for k, v in data.labels.items()}
    single = truth["objects"] == 1
    scores = {name: (read[name][single] == truth[name][single]).float().mean().item()
              for name in ("color", "shape", "size", "position")}
    exact = (read["pairs"] == truth["pairs"].bool()).all(1)
    scores["pairs"] = exact.float().mean().item()
    right = exact & torch.where(single, (read["size"] == truth["size"]) & (read["position"] == truth["position"]),
                                torch.ones_like(exact))
    scores["all"] = right.float().mean().item()
    return scores


def faithful_reading(read: dict, texts: Sequence[str]) -> tuple[torch.Tensor, dict]:
    """Per image, whether a reading (what ``Judge.read`` or ``ExactReader.read`` returned for
    the images) shows what its prompt asks for: every asked attribute right and nothing else
    drawn (the set of colour-shape pairs must equal the prompt's). Also, per attribute, whether
    each asked attribute of a one-object prompt was read as asked (lists of booleans)."""
    if len(read["pairs"]) != len(texts) or not len(texts):
        raise ValueError(f"need one prompt per image, got {len(read['pairs'])} images and {len(texts)} prompts")
    read = {k: v.cpu() for k, v in read.items()}
    asked = [parse_prompt(t) for t in texts]
    right, per = [], {"color": [], "shape": [], "size": [], "position": []}
    for i, objects in enumerate(asked):
        want = torch.zeros(len(world.PAIRS), dtype=torch.bool)
        for o in objects:
            want[world.PAIRS.index((o["color"], o["shape"]))] = True
        ok = bool((read["pairs"][i] == want).all())
        if len(objects) == 1:
            o = objects[0]
            got = {"color": world.COLORS[read["color"][i]], "shape": world.SHAPES[read["shape"][i]],
                   "size": world.SIZES[read["size"][i]], "position": world.POSITIONS[read["position"][i]]}
            for name in per:
                if o[name] is not None:
                    per[name].append(got[name] == o[name])
                    ok &= got[name] == o[name]
        right.append(ok)
    return torch.tensor(right), per


def faithful_each(reader, images: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, dict]:
    """``faithful_reading`` of ``reader``'s reading of ``images`` (the judge, or anything with
    its ``read``)."""
    if len(images) != len(texts) or not len(texts):
        raise ValueError(f"need one prompt per image, got {len(images)} images and {len(texts)} prompts")
    return faithful_reading(reader.read(images), texts)


def faithfulness(judge: Judge, images: torch.Tensor, texts: Sequence[str]) -> dict[str, float]:
    """How often images show what their prompts ask for, read by the judge (``faithful_each``):
    'faithful', and the accuracy of each asked attribute of one-object prompts."""
    right, per = faithful_each(judge, images, texts)
    scores = {"faithful": right.float().mean().item()}
    scores.update({name: float(np.mean(v)) for name, v in per.items() if v})
    return scores


def diversity(judge: Judge, images: torch.Tensor, groups: Sequence) -> float:
    """How varied the images of one prompt are where the prompt leaves size and position free:
    the probability that two images of the same group (same prompt) differ in the judged size
    or position (Gini-Simpson index), averaged over groups. 0 = always the same picture."""
    read = judge.read(images)
    cell = (read["size"] * len(world.POSITIONS) + read["position"]).cpu().numpy()
    groups = np.asarray(groups)
    if len(groups) != len(cell):
        raise ValueError(f"need one group label per image, got {len(groups)} for {len(cell)} images")
    values = []
    for g in np.unique(groups):
        members = cell[groups == g]
        if len(members) < 2:
            raise ValueError(f"group {g!r} has one image: diversity needs at least two per prompt")
        _, counts = np.unique(members, return_counts=True)
        n = len(members)
        values.append(1 - (counts * (counts - 1)).sum() / (n * (n - 1)))
    return float(np.mean(values))


TEST_RENDERS = 2_000
"""How many fresh renders the judge is tested on."""

TEST_SEED = 7
"""The seed that draws them."""


def judge_test_data(recipe: JudgeRecipe = JudgeRecipe()) -> WorldDataset:
    """The renders a judge trained by ``recipe`` is tested on: ``TEST_RENDERS`` scenes it never
    saw, mixed as its training scenes are."""
    return judge_data(TEST_RENDERS, seed=TEST_SEED, two_objects=recipe.two_objects)


def judged_as_asked(judge: Judge, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """Per image, whether the judge finds exactly the prompt's objects (colour and shape; size
    and position aside): the judge's verdict on the question the other readers answer."""
    if len(images) != len(texts) or not len(texts):
        raise ValueError(f"need one prompt per image, got {len(images)} images and {len(texts)} prompts")
    read = judge.read(images)["pairs"].cpu()
    return torch.tensor([{world.PAIRS[j] for j in row.nonzero().flatten().tolist()} == want
                         for row, want in zip(read, asked_pairs(texts))])


def train_judge(recipe: JudgeRecipe = JudgeRecipe(), *, device=None, progress: bool = True
                ) -> tuple[Judge, History]:
    """A ``Judge`` trained by ``recipe`` on renders (``judge_data``); returned in evaluation
    mode with its ``History``. The caller's random numbers are left as they were."""
    data = judge_data(recipe.examples, seed=recipe.seed, two_objects=recipe.two_objects)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        judge = Judge(recipe.width)
        history = fit_steps(judge, data, steps=recipe.steps, batch_size=recipe.batch_size,
                            optim=Optimisation(lr=recipe.lr), seed=recipe.seed, device=device, progress=progress,
                            desc="judge")
    return judge.eval(), history


RETRAIN_JUDGE = "python benchmarks/train_judge.py"
"""The command that trains the shipped judge again."""


def pretrained_judge(recipe: JudgeRecipe = JudgeRecipe(), *, path=None, device=None) -> Judge:
    """The judge trained by ``recipe`` (``train_judge``, under a minute on two CPU cores),
    loaded from the weights shipped with mmlib, so that chapter 8 spends its minute on the
    generator. A missing file or one trained by another recipe raises a ValueError that says how
    to train it again."""
    judge = Judge(recipe.width)
    shipped.load(judge, path if path is not None else shipped.path_of("judge"), asdict(recipe), RETRAIN_JUDGE)
    return judge.to(device or default_device()).eval()


def judge_record() -> dict:
    """What the shipped judge's weights say about their training: 'recipe', 'seconds', 'torch',
    'cpus'."""
    return shipped.record(shipped.path_of("judge"), RETRAIN_JUDGE)


__all__ = ["judge_data", "Judge", "judge_accuracy", "faithful_reading", "faithful_each", "faithfulness", "diversity", "TEST_RENDERS", "TEST_SEED",
           "judge_test_data", "judged_as_asked", "train_judge", "RETRAIN_JUDGE", "pretrained_judge", "judge_record"]
