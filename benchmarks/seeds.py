"""Seed spread: rerun every comparison that the book ranks, over several seeds.

    python benchmarks/seeds.py                  # every claim, seeds 0 1 2
    python benchmarks/seeds.py transfer --seeds 0 1 2 3 4
    python benchmarks/seeds.py --write          # also update mmlib/seed_spread.json

A chapter runs one seed within its time budget; this benchmark reruns the same recipe with other
seeds (the seed draws the data sample, the initialisation and the batches; the pretrained CLIP
is the book's, fixed) and reports mean +- standard deviation per method. A chapter states that A
beats B only where the gap between their means exceeds the spread; otherwise it says they tie.
With ``--write`` the table is stored in ``mmlib/seed_spread.json``, which the chapters show
(``mmlib.notebook.seed_spread``) beside their own single-seed numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmlib import world  # noqa: E402
from mmlib.data import make_dataset  # noqa: E402
from mmlib.notebook import choose_threads  # noqa: E402


def fusion(seed: int) -> dict[str, float]:
    """Chapter 3: the seven fusion layers on 'what colour is the <shape> ?' (two objects per image),
    sharing one locked image encoder trained to name colour and shape (8 epochs), 12 epochs each."""
    import copy

    from mmlib.data import ANSWERS
    from mmlib.encoders import BagOfEmbeddings, ImageCNN
    from mmlib.fusion import FUSIONS
    from mmlib.models import MultimodalModel
    from mmlib.train import evaluate, fit
    from mmlib.transfer import lock

    torch.manual_seed(seed)
    shapes_data = make_dataset("attributes", 8_000, seed=seed)
    labels = shapes_data.labels
    labels["color_shape"] = labels["color"] * len(world.SHAPES) + labels["shape"]
    cnn_model = MultimodalModel({"image": ImageCNN(dim=32, channels=(16, 32))},
                                n_classes=len(world.COLORS) * len(world.SHAPES))
    fit(cnn_model, shapes_data, "color_shape", epochs=8, lr=1e-2, seed=seed, progress=False)
    cnn = cnn_model.feature_extraction["image"]
    train = make_dataset("qa", 10_000, seed=seed, question_types=("color",))
    test = make_dataset("qa", 2_000, split="test", seed=seed, question_types=("color",))
    out = {}
    for name in FUSIONS:
        torch.manual_seed(seed)
        encoders = {"image": lock(copy.deepcopy(cnn)),
                    "text": BagOfEmbeddings(len(train.tokenizer), 32)}
        model = MultimodalModel(encoders, n_classes=len(ANSWERS), fusion=name, fused_dim=64)
        fit(model, train, "answer", epochs=12, lr=1e-2, seed=seed, progress=False)
        out[name] = evaluate(model, test, "answer")
    return out


def _transfer_setup(seed: int):
    from mmlib.pretrain import pretrained_clip
    from mmlib.transfer import SoundAsImage

    model = pretrained_clip(progress=False)
    n = len(world.SHAPES)
    sketch = (model.image_encoder, make_dataset("attributes", 100 * n, seed=7 + 10 * seed, domain="sketch"),
              make_dataset("attributes", 1000, split="test", seed=7, domain="sketch"), "image")
    ear = SoundAsImage(model.image_encoder)
    sound = (ear, make_dataset("attributes", 100 * n, seed=8 + 10 * seed, sound=True),
             make_dataset("attributes", 1000, split="test", seed=8, sound=True), "sound")
    return {"sketch": sketch, "sound": sound}


def transfer(seed: int) -> dict[str, float]:
    """Chapter 5: the four strategies at k = 1 and k = 64 labels per class, both domains
    (80 steps, lr 6e-3, batches of 32: the chapter's recipe); the k = 64 sketch classifiers
    also on clean images (out of distribution)."""
    from mmlib.train import evaluate
    from mmlib.transfer import compare_strategies

    out = {}
    clean = make_dataset("attributes", 1000, split="test", seed=7)
    for domain, (tower, pool, test, key) in _transfer_setup(seed).items():
        table, models = compare_strategies(tower, pool, test, "shape", len(world.SHAPES), ks=(1, 64), key=key,
                                      seed=seed, steps=80, lr=6e-3, batch_size=32, progress=False)
        for strategy, row in table.items():
            for k, accuracy in row.items():
                out[f"{domain} {strategy} k={k}"] = accuracy
        if domain == "sketch":
            for strategy, model in models.items():
                out[f"sketch->clean {strategy} k=64"] = evaluate(model, clean, "shape")
    return out


def normalisation(seed: int) -> dict[str, float]:
    """Chapter 5: fine-tuning and LP-FT at k = 64 on sketches, with the pretrained batch-norm
    statistics (the book's policy) and with each batch's statistics."""
    from mmlib.data import few_shot_indices
    from mmlib.train import evaluate
    from mmlib.transfer import adapt

    tower, pool, test, _ = _transfer_setup(seed)["sketch"]
    few = pool.subset(few_shot_indices(pool.labels["shape"], 64, seed=seed))
    out = {}
    for strategy in ("fine_tune", "lp_ft"):
        for frozen, policy in ((True, "pretrained stats"), (False, "batch stats")):
            model = adapt(tower, few, "shape", len(world.SHAPES), strategy, steps=80, lr=6e-3,
                          batch_size=32, seed=seed, frozen_statistics=frozen)
            out[f"{strategy}, {policy}"] = evaluate(model, test, "shape")
    return out


def lit(seed: int) -> dict[str, float]:
    """Chapter 5: a Chinese text tower against the image tower locked, unlocked, or from scratch."""
    from mmlib.pretrain import clip_model, pretrain, pretrained_clip, zero_shot_accuracy
    from mmlib.transfer import lock

    model = pretrained_clip(progress=False)
    train = make_dataset("pairs", 6_000, language="zh", seed=11 + seed)
    test = make_dataset("pairs", 1000, language="zh", split="test", seed=11)
    classes = [(c, s) for c in world.COLORS for s in world.SHAPES]
    out = {}
    for setting in ("locked", "unlocked", "scratch"):
        torch.manual_seed(seed)
        zh = clip_model(len(train.tokenizer), seed=seed)
        if setting != "scratch":
            for part in ("image_encoder", "image_proj"):
                zh.get_submodule(part).load_state_dict(model.get_submodule(part).state_dict())
        if setting == "locked":
            lock(zh.image_encoder), lock(zh.image_proj)
        pretrain(zh, train, epochs=2, lr=4e-3, seed=seed, progress=False)
        out[setting] = zero_shot_accuracy(zh, test, classes, train.tokenizer, language="zh")
    return out


def siglip(seed: int) -> dict[str, float]:
    """Chapter 4b: sigmoid (SigLIP) minus softmax (CLIP) zero-shot accuracy at batch 16 and 128
    (6,000 pairs, two epochs, lr scaled with the square root of the batch)."""
    from mmlib.pretrain import clip_model, clip_pairs, pretrain, zero_shot_accuracy

    held_out = world.default_held_out()
    small = clip_pairs(20_000).subset(range(6_000)) if seed == 0 else clip_pairs(6_000, seed)
    test = make_dataset("pairs", 300, held_out=held_out, split="test")
    classes = [(c, s) for c in world.COLORS for s in world.SHAPES]
    out = {}
    for batch_size in (16, 128):
        accuracy = {}
        for loss in ("clip", "siglip"):
            model = clip_model(len(small.tokenizer), loss=loss, seed=seed)
            lr = 4e-3 * (batch_size / 128) ** 0.5
            pretrain(model, small, epochs=2, batch_size=batch_size, lr=lr, seed=seed, progress=False)
            accuracy[loss] = zero_shot_accuracy(model, test, classes, small.tokenizer)
            out[f"{loss}, batch {batch_size}"] = accuracy[loss]
        out[f"sigmoid - softmax, batch {batch_size}"] = accuracy["siglip"] - accuracy["clip"]
    return out


def describe(seed: int) -> dict[str, float]:
    """Chapter 7b: object F1 of full tuning vs LoRA, CHAIR_i at temperature 0 vs 1.5.

    Chapter 7b's recipe (LoRA r = 4); seed 0 is the chapter's own run."""
    import copy

    from mmlib.lm import LanguageModel
    from mmlib.pretrain import pretrained_clip
    from mmlib.train import train
    from mmlib.vlm import (VisionLanguageModel, add_lora, chair, chat_tokenizer, description_data,
                           description_scores, instruction_data, language_model_loss, make_connector, mix)

    clip = pretrained_clip(progress=False)
    tok = chat_tokenizer()
    common = dict(held_out=world.default_held_out(), tokenizer=tok)
    s = 10 * seed
    data = mix(instruction_data(20_000, seed=s, **common), description_data(10_000, seed=s + 2, **common), seed=s)
    text = mix(instruction_data(10_000, seed=s + 1, **common), description_data(5_000, seed=s + 4, **common),
               seed=s + 1)
    test = description_data(500, split="test", **common)
    images = test.images.float() / 255
    torch.manual_seed(seed)
    lm = LanguageModel(len(tok), dim=128, depth=2, heads=4, max_len=48)
    train(lm, text, steps=200, batch_size=64, lr=3e-3, loss=language_model_loss(lm, tok.pad_id), seed=seed,
          progress=False)
    settings = dict(steps=400, batch_size=48, clip_grad=None, weight_decay=0.01, seed=seed, progress=False)
    out = {}
    for tuning, lr, scale in (("full", 2e-3, 3.0), ("lora", 1e-2, 0.6)):
        torch.manual_seed(seed + 1)
        connector = make_connector("mlp", clip.image_encoder.dim, lm.dim, pool=2)
        base = copy.deepcopy(lm) if tuning == "full" else add_lora(copy.deepcopy(lm), r=4)
        vlm = VisionLanguageModel(copy.deepcopy(clip.image_encoder), connector, base, tok)
        train(vlm, data, lr=lr, lr_scale={"connector": scale}, **settings)
        said = vlm.answer(images, test.texts, max_new=24)
        out[f"object F1, {tuning}"] = description_scores(said, test.scenes)["f1"]
        if tuning == "full":
            for t in (0.0, 1.5):
                sampled = vlm.answer(images, test.texts, max_new=24, temperature=t,
                                     generator=torch.Generator().manual_seed(seed))
                out[f"CHAIR_i, T = {t}"] = chair(sampled, test.scenes)["chair_i"]
    return out


def _chapter7_data(seed: int):
    """Chapter 7's start for a seed: the book's CLIP, the chat tokenizer, 20,000 visual questions
    to tune on, 10,000 for the LM to read alone, the 1,000 test questions (seed 0: the chapter's)."""
    from mmlib.pretrain import pretrained_clip
    from mmlib.vlm import chat_tokenizer, instruction_data

    tok = chat_tokenizer()
    common = dict(held_out=world.default_held_out(), tokenizer=tok)
    return (pretrained_clip(progress=False), tok, common, instruction_data(20_000, seed=10 * seed, **common),
            instruction_data(10_000, seed=10 * seed + 1, **common),
            instruction_data(1_000, split="test", **common))


def _chapter7_lm(seed: int, tok, text):
    """Chapter 7's language model, pretrained on ``text`` alone (300 steps of 128)."""
    from mmlib.lm import LanguageModel
    from mmlib.train import train
    from mmlib.vlm import language_model_loss

    torch.manual_seed(seed)
    lm = LanguageModel(len(tok), dim=128, depth=2, heads=4, max_len=48)
    train(lm, text, steps=300, batch_size=128, lr=3e-3, loss=language_model_loss(lm, tok.pad_id), seed=seed,
          progress=False)
    return lm


def vlm(seed: int) -> dict[str, float]:
    """Chapter 7: VQA with and without the image, held-out pairs, POPE random vs adversarial.

    Chapter 7's recipe (instruction-aware resampler, m = 4, 800 steps of 128); seed 0 is the
    chapter's own run."""
    import copy
    from collections import Counter

    from mmlib.train import train
    from mmlib.vlm import (InstructionResampler, VisionLanguageModel, accuracy_by_type, instruction_data,
                           pope_probes, pope_scores)

    clip, tok, common, data, text, test = _chapter7_data(seed)
    heldout = instruction_data(500, split="heldout", **common)
    lm = _chapter7_lm(seed, tok, text)
    vision = copy.deepcopy(clip.image_encoder)
    model = VisionLanguageModel(vision, InstructionResampler(vision.dim, lm.dim, m=4), lm, tok)
    images = test.images.float() / 255
    out = {"blind": accuracy_by_type(model.answer(None, test.texts), test)["overall"]}
    train(model, data, steps=800, batch_size=128, lr=1e-3, lr_scale={"connector": 3.0}, clip_grad=None,
          weight_decay=0.01, seed=seed, progress=False)
    out["with the image"] = accuracy_by_type(model.answer(images, test.texts), test)["overall"]
    out["held-out pairs"] = accuracy_by_type(model.answer(heldout.images.float() / 255, heldout.texts),
                                             heldout)["overall"]
    counts = Counter((o["color"], o["shape"]) for i in range(len(data)) for o in data.scenes.objects(i))
    popular = [pair for pair, _ in counts.most_common()]
    for strategy in ("random", "adversarial"):
        probes = pope_probes(test.scenes, strategy, seed=1, popular=popular)
        said = model.answer(images[torch.arange(len(probes)) // 2], [q for q, _ in probes])
        pope = pope_scores(said, [a for _, a in probes])
        out[f"POPE {strategy}, accuracy"] = pope["accuracy"]
        out[f"POPE {strategy}, yes ratio"] = pope["yes_ratio"]
    # paired, per seed: the same model on both kinds of negatives
    out["POPE random - adversarial, accuracy"] = out["POPE random, accuracy"] - out["POPE adversarial, accuracy"]
    out["POPE adversarial - random, yes ratio"] = (out["POPE adversarial, yes ratio"]
                                                   - out["POPE random, yes ratio"])
    return out


def connectors(seed: int) -> dict[str, float]:
    """Chapter 7c: VQA accuracy of five connectors at one budget (600 steps of 128).

    The connectors of ``mmlib.vlm.COMPARED``, chapter 7's recipe (its LM pretraining, frozen
    tower, connector lr x3), the tower's region features computed once; accuracy overall and on
    the binding questions (colour, shape)."""
    import copy

    from mmlib.train import train
    from mmlib.vlm import COMPARED, REGIONS, VisionLanguageModel, accuracy_by_type, make_connector

    clip, tok, _, data, text, test = _chapter7_data(seed)
    lm = _chapter7_lm(seed, tok, text)
    vision = copy.deepcopy(clip.image_encoder)
    out = {}
    for label, (name, options) in COMPARED.items():
        torch.manual_seed(seed + 1)
        connector = make_connector(name, vision.dim, lm.dim, **options)
        vlm = VisionLanguageModel(vision, connector, copy.deepcopy(lm), tok)
        if REGIONS not in data.labels:  # the frozen tower's features, once for all five
            data = vlm.with_regions(data)
        train(vlm, data, steps=600, batch_size=128, lr=1e-3, lr_scale={"connector": 3.0}, clip_grad=None,
              weight_decay=0.01, seed=seed, progress=False)
        vqa = accuracy_by_type(vlm.answer(test.images.float() / 255, test.texts), test)
        out[f"{label}, overall"] = vqa["overall"]
        out[f"{label}, binding"] = (vqa["color"] + vqa["shape"]) / 2
    return out


def generation(seed: int) -> dict[str, float]:
    """Chapter 8: the generator's recipe with this seed (seed 0 loads the shipped weights, which
    that recipe trained; other seeds train for about 5 min each), read by a judge: seen vs
    held-out pairs, two-object prompts (binding), guidance w = 1 vs 5; and the seen-pair drawings
    read by the judge, chapter 7b's describer and chapter 4's CLIP (fixed readers)."""
    from mmlib import generate as G
    from mmlib.pretrain import pretrained_clip
    from mmlib.train import train
    from mmlib.vlm import pretrained_describer

    torch.manual_seed(seed)
    judge = G.Judge()
    train(judge, G.judge_data(12_000, seed=seed), steps=800, batch_size=128, lr=5e-3, seed=seed,
          progress=False)
    judge.eval()
    describer, clip = pretrained_describer(), pretrained_clip(progress=False)
    recipe = G.GeneratorRecipe(seed=seed)
    model = G.pretrained_generator(recipe) if seed == 0 else G.train_generator(recipe, progress=False)[0]
    held = set(world.default_held_out())
    prompts = {"seen pairs": G.prompts(G.clear_scenes(320, seed=5, exclude=held), seed=5),
               "held-out pairs": G.prompts(G.clear_scenes(320, seed=6, only=held), seed=6),
               "two objects": G.prompts(G.clear_scenes(128, 2, seed=9, exclude=held), seed=9)}
    drawn = {name: G.generate_images(model, texts, steps=10, guidance=3.0) for name, texts in prompts.items()}
    out = {name: G.faithfulness(judge, drawn[name], texts)["faithful"] for name, texts in prompts.items()}
    # closing the loop: three readers of the seen-pair drawings (the describer and CLIP are fixed)
    seen, images = prompts["seen pairs"], drawn["seen pairs"]
    out["read as asked: judge"] = G.judged_as_asked(judge, images, seen).float().mean().item()
    out["read as asked: describer"] = G.described_as_asked(describer, images, seen)[0].float().mean().item()
    out["read as asked: CLIP"] = G.clip_reading(clip, images, seen)["named"].float().mean().item()
    out["seen - held-out"] = out["seen pairs"] - out["held-out pairs"]
    free = [f"a {c} {s}" for c, s in [p for p in G.PAIRS if p not in held][:16] for _ in range(8)]
    for w in (1.0, 5.0):
        images = G.generate_images(model, free, steps=10, guidance=w)
        out[f"faithfulness, w = {w:g}"] = G.faithfulness(judge, images, free)["faithful"]
        out[f"diversity, w = {w:g}"] = G.diversity(judge, images, free)
    return out


CLAIMS = {"fusion": fusion, "transfer": transfer, "normalisation": normalisation, "lit": lit, "siglip": siglip,
          "vlm": vlm, "describe": describe, "connectors": connectors, "generation": generation}


def summarise(runs: list[dict[str, float]]) -> dict[str, dict]:
    return {name: {"mean": round(statistics.mean(r[name] for r in runs), 4),
                   "std": round(statistics.stdev(r[name] for r in runs), 4) if len(runs) > 1 else 0.0,
                   "values": [round(r[name], 4) for r in runs]}
            for name in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("claims", nargs="*", help=f"claims to rerun: some of {list(CLAIMS)} (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--write", action="store_true", help="update mmlib/seed_spread.json")
    args = parser.parse_args(argv)
    unknown = [c for c in args.claims if c not in CLAIMS]
    if unknown:
        parser.error(f"unknown claims {unknown}: choose from {list(CLAIMS)}")
    if len(args.seeds) < 2:
        parser.error("a spread needs at least two seeds")
    torch.set_num_threads(choose_threads())
    path = ROOT / "mmlib" / "seed_spread.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    for claim in args.claims or list(CLAIMS):
        start = time.perf_counter()
        runs = []
        for seed in args.seeds:
            runs.append(CLAIMS[claim](seed))
            print(f"  {claim} seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
        table = summarise(runs)
        print(f"\n{claim}: mean ± std over seeds {args.seeds}  ({CLAIMS[claim].__doc__.splitlines()[0]})")
        for name, row in table.items():
            values = " ".join(f"{v:.3f}" for v in row["values"])
            print(f"  {name:<32} {row['mean']:.3f} ± {row['std']:.3f}   [{values}]")
        stored[claim] = {"seeds": args.seeds, "measured": date.today().isoformat(),
                         "torch": torch.__version__, "rows": table}
        if args.write:
            path.write_text(json.dumps(stored, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
