"""RandAugment, TrivialAugmentWide and AutoAugment (CIFAR-10 policy) on a whole uint8 batch, each
image with its own operations and magnitudes, on the batch's device.

torchvision.transforms.v2 draws one operation for a whole batch tensor, and kornia's versions
measured slower than the ResNet18 step they feed; so every image draws its own (op, magnitude) here
and one *round* applies all of them at once, without per-image Python and without a host sync:

- the point-wise ops (Brightness, Contrast, Posterize, Solarize, Invert, AutoContrast, Equalize)
  become one 256-entry lookup table per image and channel, applied with one gather;
- Color and Sharpness are blends with a per-image factor (1 = unchanged);
- ShearX/Y, TranslateX/Y and Rotate are one per-image affine ``grid_sample`` (identity otherwise).

An image's op is active in exactly one of the three groups and the others leave it bit-for-bit
unchanged, so a round equals applying each image's own op. What does not depend on the image (the
static lookup tables, blend factors, sampling grids) is made once per policy for every (op, bin,
sign) and gathered per image, so a round launches few kernels: on a GPU small ops cost their launch. The formulas, magnitude bins and sign
flips are torchvision's (v2 ``_AutoAugmentBase._apply_image_or_video_transform``, nearest
interpolation, fill 0); ``tests/test_batch_regularisers.py`` compares every op with it image by
image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
       "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
OP = {name: i for i, name in enumerate(OPS)}
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
SIGNED = frozenset(("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
                    "Sharpness"))


def _space(kind: str, bins: int, h: int, w: int) -> dict[str, torch.Tensor | None]:
    """torchvision's magnitude bins per op (float32 linspace, as there) for one policy family."""
    lin = torch.linspace
    if kind == "trivialaugment":
        shear, tx, ty, rot, enh, post_div = 0.99, 32.0, 32.0, 135.0, 0.99, 6
    else:  # randaugment, autoaugment
        shear, tx, ty, rot, enh, post_div = 0.3, 150.0 / 331.0 * w, 150.0 / 331.0 * h, 30.0, 0.9, 4
    space = {"Identity": None, "ShearX": lin(0.0, shear, bins), "ShearY": lin(0.0, shear, bins),
             "TranslateX": lin(0.0, tx, bins), "TranslateY": lin(0.0, ty, bins), "Rotate": lin(0.0, rot, bins),
             **{k: lin(0.0, enh, bins) for k in ("Brightness", "Color", "Contrast", "Sharpness")},
             "Posterize": (8 - (torch.arange(bins) / ((bins - 1) / post_div))).round().int(),
             "Solarize": lin(1.0, 0.0, bins), "AutoContrast": None, "Equalize": None}
    if kind == "autoaugment":
        space["Invert"] = None
        del space["Identity"]
    return space


# torchvision's AutoAugmentPolicy.CIFAR10: 25 sub-policies of two (op, probability, magnitude bin)
CIFAR10_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)), (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)), (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


def _table(space: dict[str, torch.Tensor | None], bins: int) -> torch.Tensor:
    """[len(OPS), bins] float64 magnitudes (0 for ops without one), indexed by global op id."""
    t = torch.zeros(len(OPS), bins, dtype=torch.float64)
    for name, mags in space.items():
        if mags is not None:
            t[OP[name]] = mags.double()
    return t


# ------------------------------------------------------------------ one op per image
def op_params(op: torch.Tensor, mag: torch.Tensor, h: int, w: int) -> dict[str, torch.Tensor]:
    """Everything about (op, signed magnitude) pairs that does not depend on the image, one row per
    pair: the op id, the lookup table of the static point-wise ops (Brightness, Posterize, Solarize,
    Invert; identity for the others), the blend factor and its complement, and the affine sampling
    grid (identity for non-geometric ops). A policy makes these rows once for all its (op, bin,
    sign) and gathers them per image, so a round launches no per-op parameter arithmetic."""
    op, mag = op.long(), mag.double()
    r, dev = op.shape[0], op.device
    v = torch.arange(256, device=dev, dtype=torch.float32).view(1, 256)
    factor = (1.0 + mag).float()  # in float64 first, as torchvision's Python floats
    alpha = (1.0 - (1.0 + mag)).float()  # torchvision's alpha=(1.0 - ratio)
    step = torch.pow(2.0, (8 - mag.clamp(0, 8).trunc()).float()).view(-1, 1)  # posterize: bits = int(magnitude)
    threshold = (255.0 * mag).float().view(-1, 1)
    is_ = {name: (op == OP[name]).view(-1, 1) for name in OPS}
    lut = v.expand(r, 256)
    lut = torch.where(is_["Brightness"], (v * factor.view(-1, 1)).clamp(0, 255).floor(), lut)
    lut = torch.where(is_["Posterize"], (v / step).floor() * step, lut)
    lut = torch.where(is_["Solarize"] & (v >= threshold), 255.0 - v, lut)
    lut = torch.where(is_["Invert"], 255.0 - v, lut)
    return {"op": op, "lut": lut.contiguous(), "factor": factor, "alpha": alpha, "grid": _grids(op, mag, h, w)}


def _grids(op: torch.Tensor, mag: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[R,H,W,2] grid_sample grids from torchvision's inverse affine matrix per row (shears about the
    top-left corner, rotations and translations about the centre)."""
    zero = torch.zeros_like(mag)
    shear_x = torch.where(op == OP["ShearX"], torch.atan(mag), zero)  # radians(degrees(atan(m)))
    shear_y = torch.where(op == OP["ShearY"], torch.atan(mag), zero)
    rot = torch.where(op == OP["Rotate"], torch.deg2rad(-mag), zero)  # F.rotate passes -angle
    tx = torch.where(op == OP["TranslateX"], mag.trunc(), zero)  # translate=[int(magnitude), 0]
    ty = torch.where(op == OP["TranslateY"], mag.trunc(), zero)
    sheared = (op == OP["ShearX"]) | (op == OP["ShearY"])
    cx = torch.where(sheared, -0.5 * w, zero)  # center=[0, 0], relative to the image centre
    cy = torch.where(sheared, -0.5 * h, zero)
    a = torch.cos(rot - shear_y) / torch.cos(shear_y)
    b = -(a * torch.tan(shear_x) + torch.sin(rot))
    c = torch.sin(rot - shear_y) / torch.cos(shear_y)
    d = torch.cos(rot) - c * torch.tan(shear_x)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    theta = torch.stack([m0, m1, m2, m3, m4, m5], 1).float().view(-1, 2, 3)
    base = torch.empty(1, h, w, 3, device=op.device)  # torchvision's _affine_grid
    base[..., 0] = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=op.device)
    base[..., 1] = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=op.device).unsqueeze(-1)
    base[..., 2] = 1
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=op.device)
    return base.view(1, h * w, 3).expand(len(op), -1, -1).bmm(scaled).view(-1, h, w, 2)


def apply_ops(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor, present: frozenset[str] | None = None) -> torch.Tensor:
    """Image i gets ``OPS[op[i]]`` at magnitude ``mag[i]`` (already signed). x: uint8 [B,C,H,W]."""
    return apply_rows(x, op_params(op, mag, *x.shape[-2:]), present)


def apply_rows(x: torch.Tensor, p: dict[str, torch.Tensor], present: frozenset[str] | None = None) -> torch.Tensor:
    """Image i gets the op of row i of ``p`` (see ``op_params``). ``present``: the ops that can
    occur (the others' image work is skipped), default all."""
    present = frozenset(OPS) if present is None else present
    b, c, h, w = x.shape
    index = x.reshape(b, c, h * w).long()
    lut = p["lut"].view(b, 1, 256).expand(b, c, 256)
    if present & {"Contrast", "AutoContrast", "Equalize"}:
        lut = _image_luts(x, index, p, lut, present)
    out = lut.gather(2, index).view(b, c, h, w)
    if "Color" in present and c == 3:  # saturation: a grayscale image is left as it is (as PIL does)
        factor, alpha = p["factor"].view(-1, 1, 1, 1), p["alpha"].view(-1, 1, 1, 1)
        # addcmul: one rounding for a + alpha*b, as torchvision's add_(b, alpha=...) on the CPU
        color = torch.addcmul(out * factor, _gray(out).floor(), alpha).clamp_(0, 255).floor_()
        out = torch.where(_is(p["op"], "Color").unsqueeze(1), color, out)
    if "Sharpness" in present and h > 2 and w > 2:
        out = torch.where(_is(p["op"], "Sharpness").unsqueeze(1), _sharpen(out, p["alpha"]), out)
    if present & set(GEOMETRIC):
        moved = F.grid_sample(out, p["grid"], mode="nearest", padding_mode="zeros", align_corners=False).round_()
        out = torch.where(_geometric(p["op"]).view(-1, 1, 1, 1), moved, out)
    return out.to(torch.uint8)


def _is(op: torch.Tensor, name: str) -> torch.Tensor:
    return (op == OP[name]).view(-1, 1, 1)


def _geometric(op: torch.Tensor) -> torch.Tensor:
    return (op >= OP["ShearX"]) & (op <= OP["Rotate"])  # ShearX..Rotate are consecutive in OPS


def _gray(x: torch.Tensor) -> torch.Tensor:
    """torchvision's rgb_to_grayscale (float, before its floor), [B,1,H,W]."""
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _image_luts(x8: torch.Tensor, index: torch.Tensor, p: dict, lut: torch.Tensor, present) -> torch.Tensor:
    """The point-wise ops whose table depends on the image: Contrast (its gray mean), AutoContrast
    (each channel's min and max), Equalize (each channel's histogram)."""
    b, c, h, w = x8.shape
    v = torch.arange(256, device=x8.device, dtype=torch.float32).view(1, 1, 256)
    op = p["op"]
    if "Contrast" in present:
        x = x8.float()
        mean = (_gray(x).floor() if c == 3 else x).mean(dim=(1, 2, 3)).view(-1, 1, 1)
        contrast = torch.addcmul(v * p["factor"].view(-1, 1, 1), mean, p["alpha"].view(-1, 1, 1))
        lut = torch.where(_is(op, "Contrast"), contrast.clamp_(0, 255).floor_(), lut)
    if "AutoContrast" in present:
        lo = index.amin(dim=2, keepdim=True).float()
        hi = index.amax(dim=2, keepdim=True).float()
        same = hi == lo
        inv_scale = torch.where(same, 1.0, (hi - lo) * (1.0 / 255.0))
        auto = ((v - torch.where(same, 0.0, lo)) / inv_scale).clamp_(0, 255).floor_()
        lut = torch.where(_is(op, "AutoContrast"), auto, lut)
    if "Equalize" in present:
        lut = torch.where(_is(op, "Equalize"), _equalize_lut(index), lut)
    return lut


def _equalize_lut(flat: torch.Tensor) -> torch.Tensor:
    """torchvision's (PIL's) equalisation table per image and channel, [B,C,256] float; identity
    where an image channel has a single value (step 0)."""
    b, c, n = flat.shape
    # scatter_add, not bincount: CUDA's bincount reads the input's maximum on the host (a sync)
    hist = torch.zeros(b, c, 256, dtype=torch.int32, device=flat.device)
    hist.scatter_add_(2, flat, torch.ones(1, 1, 1, dtype=torch.int32, device=flat.device).expand_as(flat))
    cum = hist.cumsum(dim=2)
    last = cum.argmax(dim=2, keepdim=True)  # the image's largest value
    step = (n - hist.gather(2, last)).div(255, rounding_mode="floor")
    table = (cum[..., :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor").clamp(0, 255)
    table = torch.cat([torch.zeros_like(table[..., :1]), table], dim=2).float()
    identity = torch.arange(256, device=flat.device, dtype=torch.float32).expand(b, c, 256)
    return torch.where(step > 0, table, identity)


SHARPEN = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))
_KERNELS: dict[tuple, torch.Tensor] = {}


def _sharpen(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness: blend with the rounded 3x3 smoothing, border pixels kept."""
    c = x.shape[1]
    key = (str(x.device), c)
    if key not in _KERNELS:  # made once: a tensor from a Python list is a host-to-device copy each time
        _KERNELS[key] = torch.tensor(SHARPEN, device=x.device).div(13.0).expand(c, 1, 3, 3)
    kernel = _KERNELS[key]
    blurred = F.conv2d(x, kernel, groups=c).round_()
    inner = x[..., 1:-1, 1:-1]
    sharp = x.clone()
    sharp[..., 1:-1, 1:-1] = torch.addcmul(inner, blurred - inner, alpha.view(-1, 1, 1, 1))
    return sharp.clamp_(0, 255).floor_()


# ------------------------------------------------------------------ the policies
class BatchPolicy:
    """``policy``: randaugment (``n`` ops at magnitude bin ``m`` of 31), trivialaugment (one op at
    a random bin of 31) or autoaugment (a random CIFAR-10 sub-policy: two ops, each with its own
    probability and bin of 10). Called on a uint8 [B,C,H,W] batch; returns a new one."""

    def __init__(self, policy: str, n: int = 2, m: int = 9):
        self.policy, self.n, self.m = policy, n, m
        self.bins = 10 if policy == "autoaugment" else 31
        self._tables: dict[tuple, tuple] = {}
        space = _space(policy, self.bins, 32, 32)
        names = {op for sub in CIFAR10_POLICY for op, _, _ in sub} if policy == "autoaugment" else set(space)
        self.present = frozenset(names)

    def tables(self, h: int, w: int, device) -> tuple:
        """(rows: ``op_params`` of every (op, bin, sign), row (op, bin, negated) = (op * bins + bin)
        * 2 + negated; the policy's op ids; for autoaugment its sub-policies' ops, probabilities and
        bins), made once per image size and device."""
        key = (h, w, str(device))
        if key not in self._tables:
            bins, n_ops = self.bins, len(OPS)
            space = _space(self.policy, bins, h, w)
            op = torch.arange(n_ops).repeat_interleave(2 * bins)
            bin_ = torch.arange(bins).repeat_interleave(2).repeat(n_ops)
            negated = torch.arange(2).repeat(n_ops * bins).bool()
            signed = torch.tensor([name in SIGNED for name in OPS])[op]
            mag = _table(space, bins)[op, bin_]
            mag = torch.where(negated & signed, -mag, mag)
            rows = {**op_params(op.to(device), mag.to(device), h, w), "mag": mag.to(device)}
            subs = [[(OP[o], p, k or 0) for o, p, k in sub] for sub in CIFAR10_POLICY]
            self._tables[key] = (rows, *(t.to(device) for t in (
                torch.tensor([OP[k] for k in space]), signed[::2 * bins].clone(),
                torch.tensor([[o for o, _, _ in s] for s in subs]),
                torch.tensor([[p for _, p, _ in s] for s in subs]), torch.tensor([[k for _, _, k in s] for s in subs]))))
        return self._tables[key]

    def sample(self, b: int, h: int, w: int, device) -> list[torch.Tensor]:
        """Each round's row of ``tables()[0]`` per image: [B] indices, drawn on ``device``."""
        _, choices, signed, sub_op, sub_p, sub_bin = self.tables(h, w, device)
        rounds = []
        if self.policy == "autoaugment":
            sub = torch.randint(len(CIFAR10_POLICY), (b,), device=device)
            for r in range(2):
                keep = torch.rand(b, device=device) <= sub_p[sub, r]
                rounds.append((torch.where(keep, sub_op[sub, r], OP["Identity"]), sub_bin[sub, r]))
        else:
            for _ in range(self.n if self.policy == "randaugment" else 1):
                op = choices[torch.randint(len(choices), (b,), device=device)]
                if self.policy == "randaugment":
                    rounds.append((op, torch.full_like(op, self.m)))
                else:
                    rounds.append((op, torch.randint(self.bins, (b,), device=device)))
        # a signed op's magnitude is negated with probability 1/2 (torchvision: rand <= 0.5)
        return [(op * self.bins + bin_) * 2 + (signed[op] & (torch.rand(b, device=device) <= 0.5)).long()
                for op, bin_ in rounds]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        rows = self.tables(h, w, x.device)[0]
        for index in self.sample(b, h, w, x.device):
            x = apply_rows(x, {k: v[index] for k, v in rows.items() if k != "mag"}, self.present)
        return x
