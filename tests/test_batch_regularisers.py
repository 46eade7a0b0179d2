"""The data-side regularisers (issue 16): RandAugment / TrivialAugmentWide / AutoAugment batched per
image, cutout and random erasing. Each op must equal torchvision's on every image, every image must
draw its own parameters, a seed must fix them, zero strength must change nothing, and the erased
area must have the expected size."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from src.datamodules.augment import build_augment
from src.datamodules.erasing import Cutout, RandomErasing, cutout_mask, erasing_mask
from src.datamodules.policies import CIFAR10_POLICY, OP, OPS, SIGNED, BatchPolicy, _space, _table, apply_ops
from src.errors import ConfigError

KINDS = {"randaugment": (v2.RandAugment, 31), "trivialaugment": (v2.TrivialAugmentWide, 31),
         "autoaugment": (v2.AutoAugment, 10)}


def _images(b, c, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=g)
    x[: b // 4] = x[: b // 4] // 4 + 60  # low-contrast images: autocontrast and equalize have work to do
    x[b // 4] = 7  # a constant image (equalize/autocontrast leave it alone)
    return x


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_op_matches_torchvision_image_by_image(kind, channels):
    """Each image gets its own op at its own magnitude bin and sign; the batched result equals
    torchvision v2's op applied to that image alone (nearest, fill 0), bit for bit."""
    cls, bins = KINDS[kind]
    reference = cls()
    space = {k: v for k, v in cls._AUGMENTATION_SPACE.items()}
    ours = _space(kind, bins, 32, 32)
    assert set(ours) == set(space)  # the same ops as torchvision's policy
    for name, (fn, signed) in space.items():  # and the same magnitude bins and signs
        ref = fn(bins, 32, 32)
        assert (ours[name] is None) == (ref is None) and (name in SIGNED) == signed
        if ref is not None:
            assert torch.equal(ours[name], ref), name
    table = _table(ours, bins)
    x = _images(12, channels)
    g = torch.Generator().manual_seed(1)
    for name in space:
        op = torch.full((len(x),), OP[name])
        mag = table[op, torch.randint(bins, (len(x),), generator=g)]
        if name in SIGNED:
            mag = torch.where(torch.rand(len(x), generator=g) < 0.5, -mag, mag)
        got = apply_ops(x, op, mag)
        assert got.dtype == torch.uint8 and got.shape == x.shape
        for i in range(len(x)):
            want = reference._apply_image_or_video_transform(
                x[i], name, float(mag[i]), interpolation=InterpolationMode.NEAREST, fill={torch.Tensor: None})
            assert torch.equal(got[i], want), (name, i, float(mag[i]))


def test_mixed_ops_in_one_batch_equal_each_image_alone():
    """One round with a different op per image equals each op applied alone: the op groups
    (lookup tables, blends, affine) leave every other image bit-for-bit unchanged."""
    x = _images(len(OPS) * 2, 3)
    op = torch.arange(len(OPS)).repeat(2)
    mag = torch.linspace(-0.4, 0.5, len(op), dtype=torch.float64) * torch.where(op == OP["Rotate"], 60, 1)
    mag = torch.where(op == OP["Posterize"], 5.0, torch.where(op == OP["Solarize"], 0.6, mag))
    got = apply_ops(x, op, mag)
    for i in range(len(x)):
        assert torch.equal(got[i], apply_ops(x[i:i + 1], op[i:i + 1], mag[i:i + 1])[0]), OPS[op[i]]
    assert torch.equal(got[op == OP["Identity"]], x[op == OP["Identity"]])


@pytest.mark.parametrize("kind", list(KINDS))
def test_policy_draws_per_image_and_is_seeded(kind):
    policy = BatchPolicy(kind, n=2, m=9)
    torch.manual_seed(0)
    rows = policy.tables(32, 32, "cpu")[0]
    rounds = [(rows["op"][i], rows["mag"][i]) for i in policy.sample(4000, 32, 32, "cpu")]
    assert len(rounds) == {"randaugment": 2, "trivialaugment": 1, "autoaugment": 2}[kind]
    op = rounds[0][0]
    counts = torch.bincount(op, minlength=len(OPS)).float() / len(op)
    if kind != "autoaugment":  # uniform over torchvision's 14 ops
        used = counts[counts > 0]
        assert len(used) == 14 and (used - 1 / 14).abs().max() < 0.03
    else:  # a uniform sub-policy, its first op with that op's probability, else nothing (Identity)
        want = torch.zeros(len(OPS))
        for (name, prob, _), _second in CIFAR10_POLICY:
            want[OP[name]] += prob / 25
            want[OP["Identity"]] += (1 - prob) / 25
        assert (counts - want).abs().max() < 0.025
    # different images get different magnitudes (and signs) from the same draw
    assert len(torch.unique(rounds[0][1])) > 10
    signed = torch.tensor([OPS[o] in SIGNED for o in op.tolist()]) & (rounds[0][1] != 0)
    assert 0.45 < (rounds[0][1][signed] < 0).float().mean() < 0.55
    x = _images(64, 3)
    torch.manual_seed(3)
    a = policy(x)
    torch.manual_seed(3)
    assert torch.equal(a, policy(x))  # same seed, same batch
    torch.manual_seed(3)
    want = x
    for i in policy.sample(64, 32, 32, "cpu"):  # the drawn ops, applied as the exact per-op path does
        want = apply_ops(want, rows["op"][i], rows["mag"][i])
    assert torch.equal(a, want)
    assert not torch.equal(a, policy(x))  # the next batch draws anew
    changed = (a != x).flatten(1).any(1).float().mean()
    assert changed > 0.5  # most images changed, not the batch as one


def test_zero_strength_is_identity():
    x = _images(32, 3)
    assert torch.equal(build_augment("none", policy="randaugment", policy_n=0)(x), x)
    assert torch.equal(build_augment("none", cutout=0, erasing=0.0)(x), x)
    assert torch.equal(Cutout(holes=0)(x), x)
    assert torch.equal(RandomErasing(p=0.0)(x), x)
    assert torch.equal(apply_ops(x, torch.zeros(32, dtype=torch.long), torch.zeros(32, dtype=torch.float64)), x)


def _expected_cutout_fraction(h: int, size: int) -> float:
    """E[covered length] / h per axis for a centre uniform over 0..h-1 clipped at the border."""
    half = size // 2
    mean_len = np.mean([min(c + half, h) - max(c - half, 0) for c in range(h)])
    return (mean_len / h) ** 2


def test_cutout_covers_the_expected_area_per_image():
    torch.manual_seed(0)
    mask = cutout_mask(20000, 32, 32, holes=1, size=16, device="cpu")
    frac = mask.flatten(1).float().mean(1)
    assert frac.mean().item() == pytest.approx(_expected_cutout_fraction(32, 16), rel=0.01)
    assert frac.max() == 0.25 and len(torch.unique(frac)) > 20  # full holes inside, clipped ones at the edges
    x = _images(256, 3) | 1  # no zero pixels: zero fill shows exactly where the holes are
    out = Cutout(holes=2, size=8, value="zero")(x)
    erased = (out == 0).all(1)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out[~erased.unsqueeze(1).expand_as(x)], x[~erased.unsqueeze(1).expand_as(x)])
    # per image: two 8x8 holes each, anywhere: between one full hole's worth (overlap/border) and two
    per_image = erased.flatten(1).sum(1)
    assert per_image.max() <= 128 and len(torch.unique(per_image)) > 10
    mean_fill = Cutout(1, 8, "mean")(x)
    changed = (mean_fill != x).any(1)
    want = x.float().mean(dim=(0, 2, 3)).round().to(torch.uint8)
    assert (mean_fill.permute(0, 2, 3, 1)[changed] == want).all()


def _erasing_reference(n: int, h: int, w: int, p, scale, ratio, rng) -> float:
    """torchvision's RandomErasing.get_params, one image at a time: mean erased fraction."""
    total = 0.0
    for _ in range(n):
        if rng.random() >= p:
            continue
        for _ in range(10):
            area = h * w * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if eh < h and ew < w:
                total += eh * ew / (h * w)
                break
    return total / n


def test_random_erasing_matches_torchvisions_sampling():
    torch.manual_seed(0)
    p, scale, ratio = 0.5, (0.02, 0.33), (0.3, 3.3)
    mask = erasing_mask(20000, 32, 32, p, scale, ratio, "cpu")
    frac = mask.flatten(1).float().mean(1)
    want = _erasing_reference(20000, 32, 32, p, scale, ratio, np.random.default_rng(0))
    assert frac.mean().item() == pytest.approx(want, rel=0.03)
    assert (frac > 0).float().mean().item() == pytest.approx(p, abs=0.015)  # almost always one fits at 32 px
    rows = mask[:, 0].any(2).sum(1)
    cols = mask[:, 0].any(1).sum(1)
    assert torch.equal(rows * cols, mask.flatten(1).sum(1))  # one rectangle per image
    assert len(torch.unique(rows[rows > 0])) > 15 and len(torch.unique(cols[cols > 0])) > 15
    x = _images(128, 3)
    torch.manual_seed(5)
    a = RandomErasing(1.0, value="random")(x)
    torch.manual_seed(5)
    assert torch.equal(a, RandomErasing(1.0, value="random")(x))
    assert a.dtype == torch.uint8 and ((a != x).flatten(1).any(1)).float().mean() > 0.95


@pytest.mark.parametrize("kwargs, word", [
    (dict(policy="randaug"), "data.policy"), (dict(policy_m=31), "data.policy_m"),
    (dict(cutout=-1), "data.cutout"), (dict(erasing=1.5), "data.erasing"),
    (dict(erasing_area=[0.5, 0.1]), "data.erasing_area"), (dict(erasing_value="black"), "data.erasing_value"),
])
def test_bad_options_fail_in_one_line(kwargs, word):
    with pytest.raises(ConfigError, match=word) as e:
        build_augment("crop_flip", **kwargs)
    assert "\n" not in str(e.value)


def test_cost_benchmark_smoke(tmp_path):
    """benchmarks/augment_cost.py --quick: every row measured beside the training step it feeds."""
    import importlib.util
    import json

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("augment_cost", ROOT / "benchmarks" / "augment_cost.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "cost.json"
    assert bench.main(["--quick", "--workloads", "lenet5/mnist", "--out", str(out)]) == 0
    rows = {r["op"]: r for r in json.loads(out.read_text())}
    assert rows["model training step"]["pct"] == 100.0
    for name in ("randaugment N=2 M=9", "trivialaugment", "autoaugment (CIFAR-10 policy)", "cutout 1x12",
                 "random erasing p=0.5", "mixup alpha=0.2", "cutmix alpha=1", "EMA update (every step)"):
        assert rows[name]["ms"] > 0 and rows[name]["ops"] > 0 and rows[name]["pct"] > 0
    assert rows["TTA flip_translate (test batches only)"]["x_eval"] > 0
