"""mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on the normalised training batch, with
timm's switch between them, and the loss on the soft targets they make.

Mixing changes the loss, so it lives with the loss in the LightningModule's training step, not in
the data module. Per batch (timm's ``mode="batch"`` switch): with probability ``prob`` the batch is
mixed, by CutMix with probability ``switch_prob`` when both alphas are > 0. Per image: its partner
(a random permutation of the batch), its weight ``lam ~ Beta(alpha, alpha)`` and, for CutMix, its
own box, whose area then sets ``lam`` exactly (the pasted fraction, clipped at the border).

Mixing a normalised batch equals normalising the mixed one (normalisation is affine per channel),
so this runs after the data module's augmentation and normalisation, on the training device,
without a host sync (the per-batch choices come from the CPU generator, seeded with the run).

The loss is cross-entropy (or softmax-MSE) against ``lam * onehot(y) + (1 - lam) * onehot(y2)``;
label smoothing is applied to that soft target, as timm's mixup_target does. Training accuracy
counts a prediction as correct when it hits the image's dominant label (``lam >= 0.5``: the label
with more of the image), so train/acc stays a number between 0 and 1 that rises with learning.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from src.errors import ConfigError
from src.lit.losses import softmax_mse

DEFAULTS = {"alpha": 0.0, "cutmix_alpha": 0.0, "prob": 1.0, "switch_prob": 0.5}


@dataclass
class Mix:
    """How a batch was mixed: image i is ``lam[i]`` of its own (label ``y``) and the rest of its
    partner's (label ``y2``)."""
    y: torch.Tensor
    y2: torch.Tensor
    lam: torch.Tensor

    @property
    def dominant(self) -> torch.Tensor:
        return torch.where(self.lam >= 0.5, self.y, self.y2)

    def soft_targets(self, num_classes: int) -> torch.Tensor:
        lam = self.lam.view(-1, 1)
        return lam * F.one_hot(self.y, num_classes) + (1 - lam) * F.one_hot(self.y2, num_classes)


def _beta(alpha: float, n: int, device) -> torch.Tensor:
    a = torch.full((n,), float(alpha), device=device)
    g1, g2 = torch._standard_gamma(a), torch._standard_gamma(a)
    return g1 / (g1 + g2)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, Mix]:
    b = x.shape[0]
    lam = _beta(alpha, b, x.device)
    perm = torch.randperm(b, device=x.device)
    w = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return torch.lerp(x[perm], x, w), Mix(y, y[perm], lam)


def cutmix_boxes(lam: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B,1,H,W] bool boxes with side ratio sqrt(1 - lam), centres uniform over the image, clipped
    at its border (timm's rand_bbox, per image)."""
    b, dev = lam.shape[0], lam.device
    ratio = torch.sqrt(1 - lam)
    ch, cw = (h * ratio).long(), (w * ratio).long()
    cy, cx = torch.randint(0, h, (b,), device=dev), torch.randint(0, w, (b,), device=dev)
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_rows = (rows >= (cy - ch // 2).clamp(0, h).view(-1, 1)) & (rows < (cy + ch // 2).clamp(0, h).view(-1, 1))
    in_cols = (cols >= (cx - cw // 2).clamp(0, w).view(-1, 1)) & (cols < (cx + cw // 2).clamp(0, w).view(-1, 1))
    return (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1)


def cutmix(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, Mix]:
    b, _, h, w = x.shape
    box = cutmix_boxes(_beta(alpha, b, x.device), h, w)
    perm = torch.randperm(b, device=x.device)
    lam = 1 - box.flatten(1).float().mean(dim=1)  # the image's own share: what is left after pasting
    return torch.where(box, x[perm], x), Mix(y, y[perm], lam)


def soft_target_loss(kind: str, logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean over the batch of cross-entropy (``ce``) or squared softmax error (``mse``) against a
    probability target, smoothed as ``target * (1 - eps) + eps / classes``."""
    if kind == "ce":
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    k = logits.shape[1]
    target = target * (1 - label_smoothing) + label_smoothing / k
    return softmax_mse(logits, target).mean()


class BatchMixer:
    """``lit.mixup``: {alpha, cutmix_alpha, prob, switch_prob}; alpha 0 turns that method off."""

    def __init__(self, num_classes: int, loss: str = "ce", label_smoothing: float = 0.0, alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, prob: float = 1.0, switch_prob: float = 0.5):
        self.num_classes, self.loss_kind, self.label_smoothing = num_classes, loss, label_smoothing
        self.alpha, self.cutmix_alpha, self.prob, self.switch_prob = alpha, cutmix_alpha, prob, switch_prob
        self._cached: tuple | None = None

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Mix]:
        # one draw per batch from the CPU generator: no device sync
        if float(torch.rand(())) >= self.prob:
            return x, Mix(y, y, torch.ones(y.shape[0], device=y.device))
        use_cutmix = self.cutmix_alpha > 0 and (self.alpha <= 0 or float(torch.rand(())) < self.switch_prob)
        return cutmix(x, y, self.cutmix_alpha) if use_cutmix else mixup(x, y, self.alpha)

    def mix_once(self, batch, step: int):
        """(mixed x, dominant label, Mix), drawn once per optimizer step: SAM's second pass (same
        step, same batch object) gets the same mixed batch back."""
        x, y = batch[0], batch[1]
        if self._cached is not None and self._cached[0] == step and self._cached[1] is x:
            return self._cached[2]
        mixed, mix = self.mix(x, y)
        out = (mixed, mix.dominant, mix)
        self._cached = (step, x, out)
        return out

    def loss(self, logits: torch.Tensor, mix: Mix) -> torch.Tensor:
        target = mix.soft_targets(self.num_classes).to(logits.dtype)
        return soft_target_loss(self.loss_kind, logits, target, self.label_smoothing)


def build_mixer(mixup: dict | None, num_classes: int, loss: str = "ce",
                label_smoothing: float = 0.0) -> BatchMixer | None:
    """The mixer for ``lit.mixup``, or None when both alphas are 0 (the plain loss path)."""
    options = dict(mixup or {})
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown lit.mixup key(s) {', '.join(sorted(unknown))}: use {', '.join(DEFAULTS)}")
    o = {**DEFAULTS, **options}
    for key in ("alpha", "cutmix_alpha"):
        if not o[key] >= 0:
            raise ConfigError(f"lit.mixup.{key}={o[key]} must be >= 0 (0 = off; 0.2 / 1.0 are usual)")
    for key in ("prob", "switch_prob"):
        if not 0 <= o[key] <= 1:
            raise ConfigError(f"lit.mixup.{key}={o[key]} must be a probability in [0, 1]")
    if o["alpha"] == 0 and o["cutmix_alpha"] == 0:
        return None
    return BatchMixer(num_classes, loss, label_smoothing, **{k: float(v) for k, v in o.items()})
