"""Objectives and samplers of generation, as plain functions of tensors (chapter 8): flow matching
(``flow_path``, ``flow_matching_loss``, ``velocity_from_data``, ``flow_data_loss``: Lipman et al.
2022, Liu et al. 2022) and DDPM noise prediction (``DDPMSchedule``, ``ddpm_noised``,
``ddpm_loss``; Ho et al. 2020); ``euler`` integrates a velocity field from noise (t = 0) to data
(t = 1), ``ddim`` walks a noise predictor down its schedule (Song et al. 2021), ``guide`` is
classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

def _column(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like)


def flow_path(x: torch.Tensor, noise: torch.Tensor,
              t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The straight path from noise (t = 0) to data (t = 1): the point
    ``x_t = (1 - t) noise + t x`` and its velocity ``x - noise`` (the
    same at every t)."""
    if x.shape != noise.shape:
        raise ValueError("data and noise must have the same shape, got "
                         f"{tuple(x.shape)} and {tuple(noise.shape)}")
    t = _column(t, x)
    return (1 - t) * noise + t * x, x - noise


def flow_matching_loss(predict: Callable, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Flow matching: the mean squared error between ``predict(x_t, t)`` and the path's velocity."""
    point, velocity = flow_path(x, noise, t)
    return F.mse_loss(predict(point, t), velocity)


def velocity_from_data(data: torch.Tensor, point: torch.Tensor,
                       t: torch.Tensor,
                       t_max: float = 0.95) -> torch.Tensor:
    """The straight path's velocity implied by a prediction of the clean
    data: ``(data - x_t) / (1 - t)``, with t capped at ``t_max`` so the
    division stays tame near t = 1. Exact for the true data (t <= t_max):
    a network may predict the picture instead of the velocity."""
    return (data - point) / (1 - _column(t, point).clamp(max=t_max))


def flow_data_loss(predict: Callable, x: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
    """Flow matching with a data-predicting network: the mean squared
    error between ``predict(x_t, t)`` and the clean data ``x``."""
    point, _ = flow_path(x, noise, t)
    return F.mse_loss(predict(point, t), x)


@dataclass
class DDPMSchedule:
    """DDPM's noise schedule: ``betas`` (T,) and ``alphas_bar`` = the running product of
    ``1 - beta``; step s mixes ``sqrt(alphas_bar[s]) x + sqrt(1 - alphas_bar[s]) noise``."""

    betas: torch.Tensor

    @classmethod
    def linear(cls, steps: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> "DDPMSchedule":
        """Ho et al.'s schedule: betas rising linearly from 1e-4 to 0.02 over 1,000 steps."""
        if not isinstance(steps, int) or steps < 2:
            raise ValueError(f"a schedule needs an integer number of steps >= 2, got {steps!r}")
        if not 0 < beta_1 < beta_T < 1:
            raise ValueError(f"need 0 < beta_1 < beta_T < 1, got {beta_1}, {beta_T}")
        return cls(torch.linspace(beta_1, beta_T, steps, dtype=torch.float64))

    @property
    def steps(self) -> int:
        return len(self.betas)

    @property
    def alphas_bar(self) -> torch.Tensor:
        return torch.cumprod(1 - self.betas, 0)


def ddpm_noised(x: torch.Tensor, noise: torch.Tensor, step: torch.Tensor, schedule: DDPMSchedule) -> torch.Tensor:
    """DDPM's forward process in one jump: ``sqrt(a) x + sqrt(1 - a) noise``, a = alphas_bar[step]."""
    step = torch.as_tensor(step, dtype=torch.long)
    if int(step.min()) < 0 or int(step.max()) >= schedule.steps:
        raise ValueError(f"steps index the schedule: 0..{schedule.steps - 1}, got {step.tolist()}")
    a = _column(schedule.alphas_bar[step], x)
    return a.sqrt() * x + (1 - a).sqrt() * noise


def ddpm_loss(predict: Callable, x: torch.Tensor, noise: torch.Tensor, step: torch.Tensor,
              schedule: DDPMSchedule) -> torch.Tensor:
    """DDPM's simple loss: the mean squared error between ``predict(x_s, s / T)`` and the noise."""
    t = torch.as_tensor(step, dtype=torch.float32) / schedule.steps
    return F.mse_loss(predict(ddpm_noised(x, noise, step, schedule), t), noise)



def guide(conditional: torch.Tensor, unconditional: torch.Tensor,
          w: float) -> torch.Tensor:
    """Classifier-free guidance: ``u + w (c - u)``. w = 1 is the
    conditional model, w = 0 the unconditional one, w > 1 pushes further
    in the direction the caption adds."""
    return unconditional + w * (conditional - unconditional)


def check_steps(steps: int) -> int:
    """``steps`` if it is a positive whole number of sampler steps, else a ValueError."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"a sampler needs a positive integer number of steps, got {steps!r}")
    return steps


def euler(field: Callable, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate ``dx/dt = field(x, t)`` from t = 0 (``noise``) to t = 1 in ``steps`` equal steps."""
    x = noise
    for k in range(check_steps(steps)):
        t = torch.full((len(x),), k / steps, device=x.device)
        x = x + field(x, t) / steps
    return x


def ddim(predict_noise: Callable, noise: torch.Tensor, steps: int, schedule: DDPMSchedule,
         clip: float | None = None) -> torch.Tensor:
    """DDIM's deterministic sampler: from the last step of ``schedule`` to data in ``steps``
    jumps; each predicts the noise, estimates the clean sample (clamped to ``[-clip, clip]``
    when given) and re-noises it to the next, smaller level."""
    check_steps(steps)
    if steps > schedule.steps:
        raise ValueError(f"at most {schedule.steps} steps for this schedule, got {steps}")
    levels = torch.linspace(schedule.steps - 1, 0, steps).round().long().tolist()
    a_bar = schedule.alphas_bar
    x = noise
    for i, s in enumerate(levels):
        a = float(a_bar[s])
        eps = predict_noise(x, torch.full((len(x),), s / schedule.steps, device=x.device))
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        a_next = float(a_bar[levels[i + 1]]) if i + 1 < len(levels) else 1.0
        x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps
    return x



__all__ = ["flow_path", "flow_matching_loss", "velocity_from_data", "flow_data_loss", "DDPMSchedule", "ddpm_noised",
           "ddpm_loss", "guide", "check_steps", "euler", "ddim"]
