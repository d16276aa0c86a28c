"""An exact reader of generated pictures, by analysis by synthesis (chapter 8 audits its judge
with it): every one-object scene the world can draw (each colour, shape and size, at positions
on a fine grid) is rendered once; a picture is read as the rendering nearest to it, refined on
finer grids around the first guess, and as two objects when a second rendering, added on the
background, explains the picture clearly better than one.

It needs no training and makes no choice per colour, so it can see what the judge cannot (two
objects of one colour); it is slow (every picture is compared with thousands of renderings) and
assumes the world's clean renders: it is an auditor, not a replacement.
"""

from __future__ import annotations

import numpy as np
import torch

from mmlib import world
from mmlib.data import render_uint8
from mmlib.generate.prompts import IMAGE_SIZE


def _render(color, shape, size, x, y, image_size: int) -> torch.Tensor:
    """One-object clean renders (n, 3 * size * size) in [0, 1] of the given attributes."""
    n = len(color)
    column = [np.asarray(v)[:, None] for v in (shape, color, size, x, y)]
    scenes = world.Scenes(*column, np.ones(n, int), np.zeros((n, 3)), world.SHAPES)
    return render_uint8(scenes, image_size, "clean").float().div(255).flatten(1)


def degraded(images: torch.Tensor, *, blur: float = 0.0, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """``images`` (B, 3, H, W) in [0, 1] blurred by a Gaussian of standard deviation ``blur``
    pixels (a 5 x 5 kernel), then given Gaussian noise of standard deviation ``noise`` (drawn
    from ``seed``), clipped to [0, 1]: how a reader copes with pictures less clean than renders."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images are (B, 3, H, W), got {tuple(images.shape)}")
    if blur < 0 or noise < 0:
        raise ValueError(f"blur and noise are standard deviations >= 0, got {blur} and {noise}")
    out = images.float()
    if blur > 0:
        k = torch.arange(-2, 3, dtype=out.dtype)
        g = torch.exp(-k ** 2 / (2 * blur ** 2))
        g = g / g.sum()
        kernel = (g[:, None] * g[None]).expand(3, 1, 5, 5).to(out.device)
        out = torch.nn.functional.conv2d(torch.nn.functional.pad(out, (2, 2, 2, 2), mode="replicate"), kernel,
                                         groups=3)
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        out = out + noise * torch.randn(out.shape, generator=gen).to(out.device)
    return out.clamp(0, 1)


class ExactReader:
    """Reads pictures as ``Judge.read`` does ('pairs', 'objects', and the colour, shape, size
    and position of the first object), by search: ``grid`` x ``grid`` centres per size for the
    first guess, then two rounds of ``fine`` x ``fine`` centres around it."""

    def __init__(self, image_size: int = IMAGE_SIZE, grid: int = 16, fine: int = 5):
        if grid < 2 or fine < 2:
            raise ValueError(f"need grid >= 2 and fine >= 2 positions, got {grid} and {fine}")
        axes = [np.arange(len(world.COLORS)), np.arange(len(world.SHAPES)), np.arange(len(world.SIZES)),
                np.arange(grid), np.arange(grid)]
        color, shape, size, gx, gy = (a.reshape(-1) for a in np.meshgrid(*axes, indexing="ij"))
        self.radius = np.array([world.RADIUS[name] for name in world.SIZES])
        r = self.radius[size]
        self.candidates = {"color": color, "x": r + gx / (grid - 1) * (1 - 2 * r),
                           "y": r + gy / (grid - 1) * (1 - 2 * r)}
        self.images = _render(color, shape, size, self.candidates["x"], self.candidates["y"], image_size)
        self.norms = (self.images ** 2).sum(1)
        empty = world.Scenes(shape[:1, None], color[:1, None], size[:1, None], r[:1, None], r[:1, None],
                             np.zeros(1, int), np.zeros((1, 3)), world.SHAPES)
        self.background = render_uint8(empty, image_size, "clean").float().div(255).flatten(1)[0]
        self.smallest_object = ((self.images - self.background) ** 2).sum(1).min().item()
        self.image_size, self.step, self.fine = image_size, 1 / (grid - 1), fine

    def _nearest(self, x: torch.Tensor, chunk: int = 32) -> list[tuple]:
        """For each flattened picture: (colour, shape, size, x, y, rendering) of the nearest
        one-object rendering. ``chunk`` pictures at a time: their candidates are rendered in one
        call (not one per picture: faster), and each reading keeps a copy of its rendering, not
        a view of the chunk's renders (views kept every render alive: about 2 GB for 640
        pictures). Renderings equally near up to rounding may be told apart differently with
        another ``chunk``: sub-pixel centres, the same reading."""
        offsets = (np.arange(self.fine) - (self.fine - 1) / 2) / (self.fine - 1)
        s, z, ox, oy = (a.reshape(-1) for a in np.meshgrid(np.arange(len(world.SHAPES)), np.arange(len(world.SIZES)),
                                                            offsets, offsets, indexing="ij"))
        r, found = self.radius[z], []
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            k = ((part ** 2).sum(1, keepdim=True) - 2 * part @ self.images.T + self.norms[None]).argmin(1).numpy()
            color, cx, cy = self.candidates["color"][k], self.candidates["x"][k], self.candidates["y"][k]
            span = np.full(len(k), 1.5 * self.step)
            for _ in range(2):  # every shape and size of that colour, at finer and finer centres
                xs = np.clip(cx[:, None] + ox[None] * span[:, None], r, 1 - r)
                ys = np.clip(cy[:, None] + oy[None] * span[:, None], r, 1 - r)
                drawn = _render(np.repeat(color, len(s)), np.tile(s, len(k)), np.tile(z, len(k)), xs.reshape(-1),
                                ys.reshape(-1), self.image_size).view(len(k), len(s), -1)
                j = ((drawn - part[:, None]) ** 2).sum(2).argmin(1).numpy()
                rows = np.arange(len(k))
                cx, cy, span = xs[rows, j], ys[rows, j], span * 1.5 / (self.fine - 1)
            found += [(int(c), int(s[i]), int(z[i]), float(a), float(b), drawn[n, i].clone())
                      for n, (c, i, a, b) in enumerate(zip(color, j, cx, cy))]
        return found

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the images show, as ``Judge.read`` returns it."""
        if images.dim() != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"the exact reader reads images of shape (B, 3, {self.image_size}, "
                             f"{self.image_size}), got {tuple(images.shape)}")
        x = images.detach().float().cpu().flatten(1)
        first = self._nearest(x)
        one = torch.stack([f[5] for f in first])
        second = self._nearest(x - one + self.background)  # the picture with the first object taken out
        both = one + torch.stack([s[5] for s in second]) - self.background
        gain = ((x - one) ** 2).sum(1) - ((x - both) ** 2).sum(1)
        two = gain > 0.5 * self.smallest_object  # a second object explains at least half a small one
        pairs = torch.zeros(len(x), len(world.PAIRS), dtype=torch.bool)
        for i in range(len(x)):
            for f in (first[i], second[i]) if two[i] else (first[i],):
                pairs[i, f[0] * len(world.SHAPES) + f[1]] = True
        where = [world.POSITIONS.index(world.position_word(f[3], f[4])) for f in first]
        return {"pairs": pairs, "objects": 1 + two.long(), "color": torch.tensor([f[0] for f in first]),
                "shape": torch.tensor([f[1] for f in first]), "size": torch.tensor([f[2] for f in first]),
                "position": torch.tensor(where)}


__all__ = ["ExactReader", "degraded"]
