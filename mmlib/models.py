"""The source article's four-layer architecture (§2.1) as one module: input -> feature extraction
-> fusion -> output. Chapter 2 builds it layer by layer; chapter 3 swaps its parts.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from mmlib.encoders import Encoder
from mmlib.fusion import Fusion, make_fusion

BATCH_KEYS = {"image": "image", "text": "tokens", "audio": "sound"}
"""Which entry of a batch (see ``mmlib.data``) feeds which modality."""


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
        return [self.feature_extraction[m].encode(x) if x is not None else None for m, x in inputs.items()]

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

    ``embed_images``/``embed_texts`` return L2-normalised embeddings (B, embed_dim); the learnable
    logit scale starts at 1/0.07 and is clamped at 100 (see ``clamp_scale``, called after each
    optimiser step, as OpenCLIP does). ``bias`` is SigLIP's learnable logit bias (init -10; for
    SigLIP also pass ``init_scale=10``).
    """

    def __init__(self, image_encoder: Encoder, text_encoder: Encoder, embed_dim: int = 64,
                 init_scale: float = 1 / 0.07, max_scale: float = 100.0, learn_scale: bool = True,
                 init_bias: float = -10.0):
        super().__init__()
        if not 0 < init_scale <= max_scale:
            raise ValueError(f"need 0 < init_scale <= max_scale, got {init_scale} and {max_scale}")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj = nn.Linear(image_encoder.dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.dim, embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(float(torch.tensor(init_scale).log())), requires_grad=learn_scale)
        self.max_scale = max_scale
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))  # used by the SigLIP loss only

    @property
    def scale(self) -> torch.Tensor:
        """The logit scale (inverse temperature), never above ``max_scale``."""
        return self.log_scale.exp().clamp(max=self.max_scale)

    @torch.no_grad()
    def clamp_scale(self) -> None:
        """Keep log(scale) in [0, log(max_scale)] (call after each optimiser step)."""
        self.log_scale.clamp_(0.0, float(torch.tensor(self.max_scale).log()))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text_proj(self.text_encoder(tokens)), dim=-1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        for key in ("image", "tokens"):
            if key not in batch:
                raise ValueError(f"a dual encoder needs the batch entries 'image' and 'tokens'; got {sorted(batch)}")
        return self.embed_images(batch["image"]), self.embed_texts(batch["tokens"])
