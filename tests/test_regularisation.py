"""The loss-side and model-side regularisers of issue 16: mixup/CutMix on soft targets, EMA/SWA of
the weights, test-time augmentation; and a short real-MNIST run of every option of the catalogue."""
from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from src.errors import ConfigError
from src.lit.averaging import WeightAverage
from src.lit.mixing import BatchMixer, Mix, build_mixer, cutmix, mixup
from src.lit.tta import tta_logits
from tests.conftest import compose_cfg


# ------------------------------------------------------------------ mixup / CutMix
def _hand_soft_ce(logits, y, y2, lam, eps, k):
    """Cross-entropy against lam*onehot(y) + (1-lam)*onehot(y2), smoothed by eps, in plain Python."""
    total = 0.0
    for row, a, b, w in zip(logits.tolist(), y.tolist(), y2.tolist(), lam.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        target = [eps / k + (1 - eps) * ((w if c == a else 0.0) + ((1 - w) if c == b else 0.0)) for c in range(k)]
        total += -sum(t * (v - log_z) for t, v in zip(target, row))
    return total / len(y)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_mixed_loss_is_the_soft_target_cross_entropy(eps):
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-2.0, 3.0, 1.0], [1.0, 1.0, -1.0]])
    y, y2 = torch.tensor([0, 2, 1, 1]), torch.tensor([1, 2, 0, 2])
    lam = torch.tensor([0.7, 0.4, 1.0, 0.25])
    mixer = build_mixer({"alpha": 0.2}, num_classes=3, loss="ce", label_smoothing=eps)
    got = mixer.loss(logits, Mix(y, y2, lam)).item()
    assert got == pytest.approx(_hand_soft_ce(logits, y, y2, lam, eps, 3), rel=1e-6)
    # the same as mixing the two smoothed cross-entropies (how timm and the papers write it)
    per = lam * F.cross_entropy(logits, y, reduction="none", label_smoothing=eps) + \
        (1 - lam) * F.cross_entropy(logits, y2, reduction="none", label_smoothing=eps)
    assert got == pytest.approx(per.mean().item(), rel=1e-6)
    assert torch.equal(Mix(y, y2, lam).dominant, torch.tensor([0, 2, 1, 2]))  # the label with more of the image
    assert torch.allclose(Mix(y, y2, lam).soft_targets(3).sum(1), torch.ones(4))


def test_mixup_weighs_each_image_with_its_own_lambda():
    b = 64
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 4, 4).contiguous()
    y = torch.arange(b)  # the label names the image: y2 tells each image's partner
    torch.manual_seed(0)
    out, mix = mixup(x, y, alpha=0.4)
    assert out.shape == x.shape and out.dtype == x.dtype
    own, partner = y.float(), mix.y2.float()
    assert torch.allclose(out[:, 0, 0, 0], mix.lam * own + (1 - mix.lam) * partner, atol=1e-5)
    assert len(torch.unique(mix.lam)) == b and len(torch.unique(mix.y2)) == b  # per-image lambda, a permutation
    torch.manual_seed(0)
    again, mix2 = mixup(x, y, alpha=0.4)
    assert torch.equal(again, out) and torch.equal(mix2.lam, mix.lam)  # seeded


def test_cutmix_weights_match_the_pasted_area():
    b, h, w = 256, 16, 16
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, h, w).contiguous()
    y = torch.arange(b)
    torch.manual_seed(1)
    out, mix = cutmix(x, y, alpha=1.0)
    moved = mix.y2 != y  # an image paired with itself shows no box
    pasted = (out[:, 0] == mix.y2.float().view(-1, 1, 1)).flatten(1).float().mean(1)
    own = (out[:, 0] == y.float().view(-1, 1, 1)).flatten(1).float().mean(1)
    assert torch.allclose((1 - mix.lam)[moved], pasted[moved]) and torch.allclose(mix.lam[moved], own[moved])
    assert torch.allclose(mix.soft_targets(b).sum(1), torch.ones(b))
    assert len(torch.unique(mix.lam)) > 30 and (mix.lam < 1).float().mean() > 0.9  # a box per image


def test_prob_and_switch_choose_per_batch():
    x, y = torch.randn(32, 3, 8, 8), torch.arange(32)  # unique labels: y2 names each image's partner
    off = BatchMixer(32, alpha=1.0, prob=0.0)
    same, mix = off.mix(x, y)
    assert torch.equal(same, x) and torch.equal(mix.lam, torch.ones(32))  # zero strength: unchanged
    logits = torch.randn(32, 32)
    assert off.loss(logits, mix).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    only_cut = BatchMixer(32, alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)
    only_mix = BatchMixer(32, alpha=1.0, cutmix_alpha=1.0, switch_prob=0.0)
    torch.manual_seed(0)
    for _ in range(5):
        cut, cmix = only_cut.mix(x, y)
        assert ((cut == x) | (cut == x[cmix.y2])).all()  # CutMix: every pixel is its own or its partner's
        mixed, mmix = only_mix.mix(x, y)
        lam = mmix.lam.view(-1, 1, 1, 1)
        assert torch.allclose(mixed, lam * x + (1 - lam) * x[mmix.y2], atol=1e-5)  # mixup: a blend


def test_mix_once_per_step_so_sams_second_pass_sees_the_same_batch():
    mixer = BatchMixer(10, alpha=1.0)
    batch = (torch.randn(8, 3, 4, 4), torch.randint(0, 10, (8,)))
    first = mixer.mix_once(batch, step=3)
    assert mixer.mix_once(batch, step=3) is first
    assert not torch.equal(mixer.mix_once(batch, step=4)[0], first[0])


@pytest.mark.parametrize("options, word", [({"alpha": -1}, "alpha"), ({"prob": 2}, "prob"),
                                           ({"beta": 1}, "unknown lit.mixup")])
def test_bad_mixup_options_fail_in_one_line(options, word):
    with pytest.raises(ConfigError, match=word):
        build_mixer(options, 10)


# ------------------------------------------------------------------ EMA / SWA
class Line(L.LightningModule):
    """A 'network' whose weight and buffer follow a known sequence: after optimizer step k both are
    k (SGD with lr 1 on the loss -w: the gradient is -1)."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.w = nn.Parameter(torch.zeros(2))
        self.model.register_buffer("b", torch.zeros(1))
        self.seen_in_val: list[float] = []

    def training_step(self, batch, batch_idx):
        self.model.b.fill_(self.global_step + 1)
        return -self.model.w.sum()

    def validation_step(self, batch, batch_idx):
        self.seen_in_val.append(self.model.w[0].item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(5, 1)), batch_size=1)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(1, 1)), batch_size=1)


def _fit(module, callbacks, epochs, ckpt_path=None, root=None):
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, accelerator="cpu",
                        enable_checkpointing=root is not None, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=root)
    trainer.fit(module, ckpt_path=ckpt_path, weights_only=False)
    return trainer


def _ema_closed_form(steps, decay):
    """avg = w_{k1}, then avg = decay*avg + (1-decay)*w_k, written as one sum (w_k = k)."""
    m = len(steps)
    return decay ** (m - 1) * steps[0] + sum((1 - decay) * decay ** (m - j) * k for j, k in enumerate(steps[1:], 2))


def test_ema_equals_its_closed_form_and_is_what_validation_sees():
    ema = WeightAverage("ema", decay=0.8, warmup_steps=2, every_n_steps=3)
    line = Line()
    _fit(line, [ema], epochs=2)
    updates = [3, 6, 9]  # after steps warmup+1, then every 3 (of 10)
    assert ema.updates == 3 and ema.averaged_weights == "ema"
    assert line.model.w.tolist() == pytest.approx([_ema_closed_form(updates, 0.8)] * 2, rel=1e-6)
    assert line.model.b.item() == pytest.approx(_ema_closed_form(updates, 0.8), rel=1e-6)  # buffers too
    assert line.seen_in_val == pytest.approx([_ema_closed_form([3], 0.8), _ema_closed_form(updates, 0.8)])


def test_swa_is_the_mean_of_the_epochs_from_its_start():
    swa = WeightAverage("swa", start_epoch=1)
    line = Line()
    _fit(line, [swa], epochs=3)
    assert swa.updates == 2 and line.model.w[0].item() == pytest.approx((10 + 15) / 2)
    # epoch 0 validates the raw weights (nothing averaged yet), then the average so far
    assert line.seen_in_val == pytest.approx([5.0, 10.0, 12.5])


def test_resume_keeps_the_ema_state(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def checkpoints():
        return ModelCheckpoint(dirpath=tmp_path, filename="e{epoch}", save_top_k=-1, every_n_epochs=1,
                               auto_insert_metric_name=False)

    whole = Line()
    _fit(whole, [WeightAverage("ema", decay=0.7), checkpoints()], epochs=2, root=tmp_path)
    want = _ema_closed_form(list(range(1, 11)), 0.7)
    assert whole.model.w[0].item() == pytest.approx(want, rel=1e-6)
    ck = torch.load(tmp_path / "e0.ckpt", weights_only=True)
    # the checkpoint loads as the averaged model; the raw weights travel beside it
    assert ck["averaged_weights"] == "ema"
    assert ck["state_dict"]["model.w"][0].item() == pytest.approx(_ema_closed_form(list(range(1, 6)), 0.7))
    assert ck["current_model_state"]["model.w"][0].item() == 5.0
    resumed, ema = Line(), WeightAverage("ema", decay=0.7)
    _fit(resumed, [ema], epochs=2, ckpt_path=str(tmp_path / "e0.ckpt"))
    assert ema.updates == 10
    assert resumed.model.w[0].item() == pytest.approx(want, rel=1e-6)


def test_a_tested_checkpoint_says_whether_it_holds_averaged_weights():
    """data.val_size > 0 tests the best checkpoint: metrics.json reports what that file holds."""
    from types import SimpleNamespace

    ema = WeightAverage("ema")
    testing = SimpleNamespace(state=SimpleNamespace(fn="test"))
    ema.on_load_checkpoint(testing, None, {"averaged_weights": "ema", "state_dict": {}})
    assert ema.averaged_weights == "ema"
    ema.on_load_checkpoint(testing, None, {"averaged_weights": None, "state_dict": {}})  # saved before any update
    assert ema.averaged_weights is None


def test_bad_averaging_options_fail_in_one_line():
    with pytest.raises(ConfigError, match="decay"):
        WeightAverage("ema", decay=1.5)
    with pytest.raises(ConfigError, match="ema or swa"):
        WeightAverage("polyak")


# ------------------------------------------------------------------ test-time augmentation
def test_tta_averages_the_views_logits():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    x = torch.randn(4, 3, 8, 8)
    plain = net(x)
    assert torch.allclose(tta_logits(net, x, plain, "flip"), (plain + net(x.flip(-1))) / 2, atol=1e-6)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [padded[..., :8, :8], padded[..., 2:, 2:]]
    shifted = sum((net(v) + net(v.flip(-1))) / 2 for v in views) / 2  # airbench94's level-2 TTA
    want = ((plain + net(x.flip(-1))) / 2 + shifted) / 2
    assert torch.allclose(tta_logits(net, x, plain, "flip_translate"), want, atol=1e-6)


def test_tta_counts_each_test_image_once_compiled_and_padded(fake_data, tmp_path, monkeypatch):
    """Compiled (static shapes: the last test batch padded with label -1): TTA's accuracy is over
    the 40 test images exactly, and mixup, EMA and TTA compile no graph beyond the usual two."""
    import pandas as pd

    import src.lit.tta as tta
    from train import train

    seen = []
    original = tta.log_tta
    monkeypatch.setattr(tta, "log_tta", lambda m: (seen.append(int(m.stats["test_tta_"].seen)), original(m)))
    cfg = compose_cfg(["model=lenet5", "data=mnist", "seed=0", "trainer.max_epochs=1", "data.batch_size=11",
                       "data.eval_batch_size=16", "trainer.enable_model_summary=false", "~callbacks.progress_bar",
                       "trainer.compile=default", "trainer.compile_backend=eager", "lit.tta=flip_translate",
                       "lit.mixup.alpha=0.2", "lit.mixup.cutmix_alpha=1.0", "callbacks=ema"], tmp_path, fake_data)
    train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "completed" and m["compiled"] is True
    assert m["compile_graphs"] == 2 and m["graphs_compiled_while_timed"] == 0
    assert seen == [40] and 0 <= m["test/acc_tta"] <= 1 and m["test/loss_tta"] > 0
    assert pd.read_csv(tmp_path / "test_confusion.csv", index_col=0).to_numpy().sum() == 40
    assert m["averaged_weights"] == "ema" and m["tested_weights"] == "final"


def test_sams_second_pass_trains_on_the_same_mixed_batch(fake_data, tmp_path):
    from hydra.utils import instantiate

    from src.datamodules import build_datamodule
    from tests.conftest import QUICK

    cfg = compose_cfg(["model=lenet5", "data=mnist", "seed=0", "optimizer=sam", "lit.mixup.alpha=1.0",
                       "lit.mixup.cutmix_alpha=1.0", *QUICK], tmp_path, fake_data)
    model = instantiate(cfg.model)
    module = instantiate(cfg.lit, model=model)
    inputs = []
    model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=build_datamodule(cfg.data))
    train_inputs = [x for x in inputs if x.shape[0] == 8][:4]  # 2 steps x 2 passes (eval batches are 16)
    assert len(train_inputs) == 4
    assert torch.equal(train_inputs[0], train_inputs[1]) and torch.equal(train_inputs[2], train_inputs[3])
    assert not torch.equal(train_inputs[0], train_inputs[2])


# ------------------------------------------------------------------ every option, really trained
# LeNet-5 on 2 % of the real MNIST (1,200 training images; 20 steps of 32) and 3 % of its test split,
# one epoch with Adam: each option of the catalogue trains and reports its accuracy. (The plain run
# is test_real_mnist.py's.)
REAL_RUNS = {  # two or three options per run keep the file's time down; each option runs somewhere
    "mixup_sam": ["lit.mixup.alpha=0.2", "optimizer=sam", "optimizer.base_optimizer._target_=torch.optim.Adam",
                  "optimizer.lr=0.003", "~optimizer.momentum", "~optimizer.nesterov"],  # SAM's second pass too
    "cutmix_smoothing_tta": ["lit.mixup.cutmix_alpha=1.0", "lit.label_smoothing=0.1", "lit.tta=flip_translate"],
    "cutout_erasing_ema": ["data.cutout=1", "data.cutout_size=12", "data.erasing=0.5", "data.erasing_value=random",
                           "callbacks=ema", "callbacks.weight_averaging.decay=0.9"],
    "randaugment_swa": ["data.policy=randaugment", "callbacks=swa", "callbacks.weight_averaging.start_epoch=0"],
    "trivialaugment": ["data.policy=trivialaugment"],
    "autoaugment": ["data.policy=autoaugment"],
}


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("option", list(REAL_RUNS))
def test_each_option_trains_on_real_mnist(option, tmp_path):
    from tests.test_real_mnist import real_data_dir
    from train import train

    data = real_data_dir()
    if data is None:
        pytest.skip("real MNIST not found (set DATA_DIR)")
    base = ["model=lenet5", "data=mnist", "seed=0", "optimizer=adam", "optimizer.lr=0.003", "trainer.max_epochs=1",
            "data.train_fraction=0.02", "data.test_fraction=0.03", "data.batch_size=32", "data.eval_batch_size=500",
            "trainer.limit_train_batches=20", "trainer.num_sanity_val_steps=0", "~callbacks.progress_bar",
            "trainer.enable_model_summary=false", "lit.log_images=false"]
    overrides = base + REAL_RUNS[option]
    if option == "mixup_sam":  # SAM around Adam instead of plain Adam
        overrides = [o for o in base if not o.startswith("optimizer")] + REAL_RUNS[option]
    acc = train(compose_cfg(overrides, tmp_path, data))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "completed" and acc == m["test/acc"]
    assert acc > 0.15, m  # chance is 0.1 (the largest class 0.11): it learned in 20 steps
    assert m["averaged_weights"] == ("ema" if "ema" in option else "swa" if "swa" in option else None)
    assert ("test/acc_tta" in m) == ("tta" in option)
    print(f"{option}: test/acc {acc:.3f}" + (f", test/acc_tta {m['test/acc_tta']:.3f}" if "tta" in option else ""))
