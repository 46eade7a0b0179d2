"""Cutout (DeVries & Taylor 2017) and random erasing (Zhong et al. 2020) on a whole uint8 batch:
every image its own holes / rectangle, drawn on the batch's device as masks (no per-image Python,
no host sync), then one ``torch.where``.

Fill values, in uint8 before normalisation: ``mean`` is the batch's mean colour per channel, which
normalises to about 0 -- what cutout and torchvision/timm's erasing write, as they run after
normalisation; ``zero`` is black; ``random`` is uniform noise per pixel and channel.
"""
from __future__ import annotations

import math

import torch

FILLS = ("mean", "zero", "random")


def fill_like(x: torch.Tensor, value: str) -> torch.Tensor:
    """What erased pixels become, broadcastable to x (uint8 [B,C,H,W])."""
    if value == "zero":
        return torch.zeros((), dtype=x.dtype, device=x.device)
    if value == "random":
        return torch.randint(0, 256, x.shape, dtype=x.dtype, device=x.device)
    return x.float().mean(dim=(0, 2, 3), keepdim=True).round_().to(x.dtype)


def _spans(lo: torch.Tensor, hi: torch.Tensor, size: int) -> torch.Tensor:
    """[..., size] bool: position p lies in [lo, hi)."""
    p = torch.arange(size, device=lo.device)
    return (p >= lo.unsqueeze(-1)) & (p < hi.unsqueeze(-1))


def cutout_mask(b: int, h: int, w: int, holes: int, size: int, device) -> torch.Tensor:
    """[B,1,H,W] bool: ``holes`` squares of side ``size`` per image, centres uniform over the image,
    clipped at its border (so a hole near the edge is smaller), as in the paper's code."""
    cy = torch.randint(0, h, (b, holes), device=device)
    cx = torch.randint(0, w, (b, holes), device=device)
    half = size // 2
    rows = _spans((cy - half).clamp(0, h), (cy + half).clamp(0, h), h)  # [B,holes,H]
    cols = _spans((cx - half).clamp(0, w), (cx + half).clamp(0, w), w)  # [B,holes,W]
    return (rows.unsqueeze(-1) & cols.unsqueeze(-2)).any(dim=1, keepdim=True)


def erasing_mask(b: int, h: int, w: int, p: float, scale: tuple[float, float], ratio: tuple[float, float],
                 device, attempts: int = 10) -> torch.Tensor:
    """[B,1,H,W] bool: torchvision's RandomErasing rectangle per image. With probability ``p`` an
    image tries up to ``attempts`` rectangles (area uniform in ``scale`` x H*W, log aspect ratio
    uniform in ``ratio``) and erases the first that fits; if none fits it is left alone. All
    attempts are drawn at once and the first fitting one is picked."""
    area = torch.empty(b, attempts, device=device).uniform_(*scale) * (h * w)
    aspect = torch.exp(torch.empty(b, attempts, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    eh = torch.sqrt(area * aspect).round().long()
    ew = torch.sqrt(area / aspect).round().long()
    fits = (eh < h) & (ew < w)
    first = fits.long().argmax(dim=1, keepdim=True)  # the first fitting attempt (0 when none fits)
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    erase = fits.any(dim=1) & (torch.rand(b, device=device) < p)
    top = (torch.rand(b, device=device) * (h - eh + 1)).long()  # randint(0, h - eh + 1)
    left = (torch.rand(b, device=device) * (w - ew + 1)).long()
    mask = _spans(top, top + eh, h).unsqueeze(-1) & _spans(left, left + ew, w).unsqueeze(-2)
    return (mask & erase.view(b, 1, 1)).unsqueeze(1)


class Cutout:
    def __init__(self, holes: int = 1, size: int = 16, value: str = "mean"):
        self.holes, self.size, self.value = holes, size, value

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return torch.where(cutout_mask(b, h, w, self.holes, self.size, x.device), fill_like(x, self.value), x)


class RandomErasing:
    def __init__(self, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value: str = "mean"):
        self.p, self.scale, self.ratio, self.value = p, tuple(scale), tuple(ratio), value

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        mask = erasing_mask(b, h, w, self.p, self.scale, self.ratio, x.device)
        return torch.where(mask, fill_like(x, self.value), x)
