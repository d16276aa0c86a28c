"""The book's models. Chapter 2's four-layer ``MultimodalModel`` (the source article's §2.1: input
-> feature extraction -> fusion -> output; chapter 3 swaps its parts and compares seven fusions by
``mmlib.recipes.FusionRecipe``), and chapter 4's pretraining models, one per objective, all
around the same image tower:

- ``DualEncoder``: CLIP-style image and text towers in one joint space (CLIP or SigLIP loss);
- ``BagOfWordsModel``: predicts the caption's words from the image;
- ``CaptioningModel``: writes the caption word by word, seeing the image at every step.

A pretraining model owns its loss: ``model.loss(batch)`` returns a dict of named terms whose
``'loss'`` entry the training loop (``mmlib.train.fit_steps``) minimises.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Iterable, Mapping

import torch
from torch import nn

from mmlib import objectives, world
from mmlib.data import ANSWERS, BATCH_KEYS, IMAGE, TOKENS, WorldDataset, make_dataset
from mmlib.distributed import gather, rank, world_size
from mmlib.encoders import BagOfEmbeddings, Encoder, Features, ImageCNN
from mmlib.fusion import Fusion, make_fusion
from mmlib.recipes import FusionRecipe
from mmlib.text import Tokenizer
from mmlib.freezing import lock
from mmlib.train import History, evaluate, fit

CONTRASTIVE_LOSSES = ("clip", "siglip")


class InputLayer(nn.Module):
    """输入层: picks each modality's tensor out of a batch; a missing modality becomes ``None``."""

    def __init__(self, modalities: Iterable[str]):
        super().__init__()
        self.modalities = list(modalities)
        unknown = [m for m in self.modalities if m not in BATCH_KEYS]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r}: expected some of {tuple(BATCH_KEYS)}")

    def forward(self, batch: Mapping[str, torch.Tensor], missing: Iterable[str] = ()) -> dict:
        missing = set(missing)
        bad = missing - set(self.modalities)
        if bad:
            raise ValueError(f"cannot leave out {sorted(bad)}: this model's modalities are {self.modalities}")
        if missing >= set(self.modalities):
            raise ValueError("every modality is missing: keep at least one")
        inputs = {}
        for m in self.modalities:
            if m in missing:
                inputs[m] = None
            elif BATCH_KEYS[m] not in batch:
                raise ValueError(f"the batch has no {BATCH_KEYS[m]!r} entry for the {m} modality "
                                 f"(it has {sorted(batch)}); pass missing=[{m!r}] to leave it out")
            else:
                inputs[m] = batch[BATCH_KEYS[m]]
        return inputs


_POOLED, _TOKENS, _MASK = ":pooled", ":tokens", ":mask"  # cached features (MultimodalModel.with_features)


def _cached(batch: Mapping[str, torch.Tensor], modality: str) -> Features | None:
    """The features of ``modality`` that ``with_features`` attached to the batch, if any."""
    if f"{modality}{_POOLED}" not in batch:
        return None
    return Features(*(batch[f"{modality}{part}"] for part in (_POOLED, _TOKENS, _MASK)))


class MultimodalModel(nn.Module):
    """Input layer -> feature extraction (one encoder per modality) -> fusion -> output layer.

    encoders: {'image': ImageCNN(...), 'text': TextGRU(...), 'audio': ...} (one or more).
    fusion:   a name from ``mmlib.fusion.FUSIONS`` or a Fusion module; ignored with one modality.
    modality_dropout: while training, the probability of hiding each modality from a batch (never
              all of them), so the model learns to cope when one is missing at test time.
    """

    def __init__(self, encoders: Mapping[str, Encoder], n_classes: int, fusion: str | Fusion = "concat",
                 fused_dim: int = 128, modality_dropout: float = 0.0, **fusion_options):
        super().__init__()
        if not encoders:
            raise ValueError("give at least one encoder, e.g. {'image': ImageCNN()}")
        if not 0 <= modality_dropout < 1:
            raise ValueError(f"modality_dropout is a probability in [0, 1), got {modality_dropout}")
        self.modalities = list(encoders)
        self.input_layer = InputLayer(self.modalities)
        self.feature_extraction = nn.ModuleDict(encoders)
        dims = [encoders[m].dim for m in self.modalities]
        if len(dims) == 1:
            self.fusion = nn.Sequential(nn.Linear(dims[0], fused_dim), nn.ReLU())  # nothing to fuse
            produces_logits = False
        else:
            self.fusion = fusion if isinstance(fusion, Fusion) else make_fusion(
                fusion, dims, n_classes if fusion == "late" else fused_dim, **fusion_options)
            if self.fusion.dims != dims:
                raise ValueError(f"the fusion expects feature sizes {self.fusion.dims}, the encoders give {dims}")
            produces_logits = self.fusion.produces_logits
        self.output = nn.Identity() if produces_logits else nn.Linear(fused_dim, n_classes)
        self.modality_dropout = modality_dropout

    def features(self, batch: Mapping[str, torch.Tensor], missing: Iterable[str] = ()) -> list:
        """Input layer and feature extraction: one Features (or None) per modality."""
        missing = set(missing)
        if self.training and self.modality_dropout and len(self.modalities) > 1:
            drop = {m for m in self.modalities if torch.rand(()) < self.modality_dropout}
            if len(drop | missing) < len(self.modalities):
                missing |= drop
        inputs = self.input_layer(batch, missing)
        return [None if x is None else _cached(batch, m) or self.feature_extraction[m].encode(x)
                for m, x in inputs.items()]

    @torch.no_grad()
    def with_features(self, data: WorldDataset, modality: str = "image", batch_size: int = 512) -> WorldDataset:
        """A copy of ``data`` whose batches also carry the features of this model's *locked*
        ``modality`` encoder (``mmlib.freezing.lock``: frozen and always in evaluation mode),
        computed once: training then skips the encoder, and gets the same features. Valid for
        any model with the same locked encoder (each fusion of chapter 3 has a copy of one)."""
        if modality not in self.modalities:
            raise ValueError(f"this model has no {modality!r} encoder; its modalities are {self.modalities}")
        encoder = self.feature_extraction[modality]
        if encoder.training or any(p.requires_grad for p in encoder.parameters()):
            raise ValueError(f"cached features need a locked {modality} encoder (mmlib.freezing.lock): "
                             "an encoder that trains, or whose BatchNorm updates, changes its features")
        device = next(encoder.parameters()).device
        parts = [encoder.encode(data.batch(part, device)[BATCH_KEYS[modality]])
                 for part in torch.arange(len(data)).split(batch_size)]
        cached = {f"{modality}{part}": torch.cat([getattr(f, name).cpu() for f in parts])
                  for part, name in ((_POOLED, "pooled"), (_TOKENS, "tokens"), (_MASK, "mask"))}
        return dataclasses.replace(data, labels={**data.labels, **cached})

    def fuse(self, feats: list) -> torch.Tensor:
        """The fusion layer (with a single modality, its pooled features go straight through it)."""
        return self.fusion(feats[0].pooled) if len(feats) == 1 else self.fusion(feats)

    def forward(self, batch: Mapping[str, torch.Tensor], missing: Iterable[str] = ()) -> torch.Tensor:
        return self.output(self.fuse(self.features(batch, missing)))

    @torch.no_grad()
    def trace(self, batch: Mapping[str, torch.Tensor]) -> dict[str, tuple]:
        """The tensor shapes between the four layers, for one batch (chapter 2)."""
        shapes = {f"input: {m}": tuple(x.shape) for m, x in self.input_layer(batch).items()}
        feats = self.features(batch)
        for m, f in zip(self.modalities, feats):
            shapes[f"features: {m} (pooled)"] = tuple(f.pooled.shape)
            shapes[f"features: {m} (tokens)"] = tuple(f.tokens.shape)
        fused = self.fuse(feats)
        shapes["fusion"] = tuple(fused.shape)
        shapes["output"] = tuple(self.output(fused).shape)
        return shapes


class DualEncoder(nn.Module):
    """CLIP-style: an image tower and a text tower map into one joint space (chapter 4).

    ``embed_images``/``embed_texts`` return L2-normalised embeddings (B, embed_dim). ``loss``:
    'clip' (softmax over the batch; the learnable logit scale starts at 1/0.07) or 'siglip' (a
    sigmoid per pair; scale 10 and a learnable bias -10, Zhai et al. 2023). The scale is clamped
    at ``max_scale`` after every optimiser step (``after_step``), as OpenCLIP does. Under
    ``torchrun`` the loss gathers every process's embeddings: the negatives of the global batch;
    with ``local_loss`` each process then scores only its own rows against the global batch
    (OpenCLIP's ``local_loss``: same gradients, logits of b x N*b instead of N*b x N*b).
    """

    def __init__(self, image_encoder: Encoder, text_encoder: Encoder, embed_dim: int = 64,
                 loss: str = "clip", init_scale: float | None = None, max_scale: float = objectives.CLIP_MAX_SCALE,
                 learn_scale: bool = True, init_bias: float = objectives.SIGLIP_INIT_BIAS,
                 local_loss: bool = False):
        super().__init__()
        if loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"unknown contrastive loss {loss!r}: expected one of {CONTRASTIVE_LOSSES}")
        if init_scale is None:
            init_scale = objectives.CLIP_INIT_SCALE if loss == "clip" else objectives.SIGLIP_INIT_SCALE
        if not 0 < init_scale <= max_scale:
            raise ValueError(f"need 0 < init_scale <= max_scale, got {init_scale} and {max_scale}")
        self.loss_name, self.local_loss = loss, local_loss
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj = nn.Linear(image_encoder.dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.dim, embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(float(torch.tensor(init_scale).log())), requires_grad=learn_scale)
        self.max_scale = max_scale
        # SigLIP's logit bias; a CLIP model never uses it, so it does not learn there.
        self.bias = nn.Parameter(torch.tensor(float(init_bias)), requires_grad=loss == "siglip")

    @property
    def scale(self) -> torch.Tensor:
        """The logit scale (inverse temperature), never above ``max_scale``."""
        return self.log_scale.exp().clamp(max=self.max_scale)

    @torch.no_grad()
    def clamp_scale(self) -> None:
        """Keep log(scale) in [0, log(max_scale)]."""
        self.log_scale.clamp_(0.0, float(torch.tensor(self.max_scale).log()))

    def after_step(self) -> None:
        """Called by the training loop after each optimiser step."""
        self.clamp_scale()

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text_proj(self.text_encoder(tokens)), dim=-1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image embeddings, text embeddings) of a batch of pairs."""
        _require(batch, (IMAGE, TOKENS), "a dual encoder")
        return self.embed_images(batch[IMAGE]), self.embed_texts(batch[TOKENS])

    def loss(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The contrastive loss over the (global) batch, and the current logit scale."""
        local_image, local_text = self(batch)
        image_emb, text_emb = gather(local_image), gather(local_text)
        if self.local_loss and world_size() > 1:
            offset = rank() * len(local_image)
            if self.loss_name == "clip":
                value = objectives.clip_loss_local(local_image, local_text, image_emb, text_emb, offset,
                                                   self.scale)
            else:
                value = objectives.siglip_loss_local(local_image, text_emb, offset, self.scale, self.bias)
        elif self.loss_name == "clip":
            value = objectives.clip_loss(image_emb, text_emb, self.scale)
        else:
            value = objectives.siglip_loss(image_emb, text_emb, self.scale, self.bias)
        return {"loss": value, "scale": self.scale.detach()}


class BagOfWordsModel(nn.Module):
    """Image tower -> scores over the vocabulary: which words will the caption contain?"""

    def __init__(self, image_encoder: Encoder, tokenizer: Tokenizer):
        super().__init__()
        self.image_encoder = image_encoder
        self.head = nn.Linear(image_encoder.dim, len(tokenizer))
        self.special_ids = tokenizer.special_ids

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.image_encoder(images))  # (B, V)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        _require(batch, (IMAGE, TOKENS), "a bag-of-words model")
        return {"loss": objectives.bag_of_words_loss(self(batch[IMAGE]), batch[TOKENS], self.special_ids)}


class CaptioningModel(nn.Module):
    """Image tower + a GRU decoder that sees the image embedding at every step (concatenated to each
    word embedding), so that it cannot learn to ignore the image after the first word."""

    def __init__(self, image_encoder: Encoder, tokenizer: Tokenizer, dim: int = 64):
        super().__init__()
        self.image_encoder = image_encoder
        self.pad_id, self.bos_id, self.eos_id = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
        self.embed = nn.Embedding(len(tokenizer), dim, padding_idx=self.pad_id)
        self.image_proj = nn.Linear(image_encoder.dim, dim)
        self.gru = nn.GRU(2 * dim, dim, batch_first=True)
        self.out = nn.Linear(dim, len(tokenizer))

    def image_state(self, images: torch.Tensor) -> torch.Tensor:
        """The image as the decoder sees it: (B, dim). Compute once, reuse for many captions."""
        return self.image_proj(self.image_encoder(images))

    def forward(self, images: torch.Tensor, inputs: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) for input tokens (B, T) (which start with <bos>)."""
        image = self.image_state(images) if image is None else image  # (B, dim)
        words = self.embed(inputs)
        steps = torch.cat([words, image[:, None].expand(-1, inputs.shape[1], -1)], dim=-1)
        hidden, _ = self.gru(steps, image[None].contiguous())
        return self.out(hidden)

    def shift(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: inputs are <bos> + caption, targets are caption + <eos> (padding stays)."""
        lengths = (tokens != self.pad_id).sum(1)
        inputs = torch.cat([torch.full_like(tokens[:, :1], self.bos_id), tokens], dim=1)
        targets = torch.cat([tokens, torch.full_like(tokens[:, :1], self.pad_id)], dim=1)
        targets[torch.arange(len(tokens)), lengths] = self.eos_id
        return inputs, targets

    def log_likelihood(self, images: torch.Tensor, tokens: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """log p(caption | image) for each pair, summed over the caption's tokens and <eos>: (B,).
        Pass ``image`` (from ``image_state``) to skip the image tower."""
        inputs, targets = self.shift(tokens)
        logp = self(images, inputs, image).log_softmax(-1)
        picked = logp.gather(2, targets[..., None])[..., 0]
        return (picked * (targets != self.pad_id)).sum(1)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        _require(batch, (IMAGE, TOKENS), "a captioning model")
        inputs, targets = self.shift(batch[TOKENS])
        return {"loss": objectives.captioning_loss(self(batch[IMAGE], inputs), targets, self.pad_id)}


def _require(batch: Mapping, keys: tuple[str, ...], who: str) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"{who} needs the batch entries {list(keys)}; got {sorted(batch)} "
                         "(make the data with make_dataset('pairs', ...))")


# ---------------------------------------------------------------------------------------------
# Chapter 3's comparison: seven fusions answer one question about two objects
# ---------------------------------------------------------------------------------------------

def fusion_data(recipe: FusionRecipe) -> dict[str, WorldDataset]:
    """Chapter 3's data: 'shapes' (single objects labelled 'color_shape', one of 48, for the
    image encoder), and 'train' / 'test' questions 'what colour is the <shape> ?' about two
    objects."""
    shapes = make_dataset("attributes", recipe.encoder_examples, seed=recipe.seed)
    shapes.labels["color_shape"] = shapes.labels["color"] * len(world.SHAPES) + shapes.labels["shape"]
    ask = dict(seed=recipe.seed, question_types=("color",))
    return {"shapes": shapes, "train": make_dataset("qa", recipe.questions, **ask),
            "test": make_dataset("qa", recipe.test_questions, split="test", **ask)}


def train_fusion_encoder(recipe: FusionRecipe, data: dict | None = None, *, device=None, progress: bool = True
                         ) -> tuple[MultimodalModel, History]:
    """An image CNN trained to name colour and shape together (48 classes) on ``data['shapes']``:
    the encoder every fusion of the comparison shares. Returns the classifier (its encoder is
    ``model.feature_extraction['image']``) and its ``History``."""
    data = data or fusion_data(recipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = MultimodalModel({"image": ImageCNN(recipe.encoder_width, channels=recipe.encoder_channels)},
                                n_classes=len(world.PAIRS))
    history = fit(model, data["shapes"], "color_shape", epochs=recipe.encoder_epochs, batch_size=recipe.batch_size,
                  lr=recipe.encoder_lr, seed=recipe.seed, device=device, progress=progress, desc="image encoder")
    return model, history


def fusion_model(recipe: FusionRecipe, fusion: str, encoder: Encoder,
                 vocab_size: int) -> MultimodalModel:
    """A question-answering model: a locked copy of ``encoder`` and a new
    bag-of-embeddings question encoder, joined by ``fusion``, answering
    over ``mmlib.data.ANSWERS`` (initialised from the recipe's seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        encoders = {"image": lock(copy.deepcopy(encoder)),
                    "text": BagOfEmbeddings(vocab_size, recipe.text_dim)}
        return MultimodalModel(encoders, n_classes=len(ANSWERS),
                               fusion=fusion, fused_dim=recipe.fused_dim)


def compare_fusions(recipe: FusionRecipe, encoder: Encoder, data: dict | None = None, *, device=None,
                    progress: bool = True) -> tuple[list[dict], dict[str, MultimodalModel]]:
    """Each fusion of ``recipe`` trained on the same questions around the same locked
    ``encoder``. Returns one row per fusion ('fusion', 'parameters' of the fusion layer,
    'seconds' to train, test 'accuracy', and accuracy with the image hidden, 'no image') and the
    trained models."""
    data = data or fusion_data(recipe)
    rows, models, train = [], {}, None
    for name in recipe.fusions:
        model = models[name] = fusion_model(recipe, name, encoder, len(data["train"].tokenizer))
        train = train or model.with_features(data["train"])  # the locked encoder's, once for all
        history = fit(model, train, "answer", epochs=recipe.epochs, batch_size=recipe.batch_size,
                      lr=recipe.lr, seed=recipe.seed, device=device, progress=progress, desc=name)
        rows.append({"fusion": name, "parameters": sum(p.numel() for p in model.fusion.parameters()),
                     "seconds": history.seconds, "accuracy": evaluate(model, data["test"], "answer"),
                     "no image": evaluate(model, data["test"], "answer", missing=["image"])})
    return rows, models


__all__ = ["CONTRASTIVE_LOSSES", "InputLayer", "MultimodalModel", "DualEncoder", "BagOfWordsModel",
           "CaptioningModel", "fusion_data", "train_fusion_encoder", "fusion_model", "compare_fusions"]
