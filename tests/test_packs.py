"""Fused seed packs (issue 25): a member of a pack is its standalone run. The same seeds are trained
standalone (train.py, one run each) and as one pack (pack_seeds, src/packs/train.py); initial
weights, weights after the steps, test accuracy and the run folders must agree.

fp32, deterministic, no augmentation. Tolerances: weights within 1e-4 (relative 2-norm per tensor);
the test accuracy within one image per 10,000. Not bit equality: a convolution over stacked weights
is a grouped convolution, whose fp32 sums run in another order (~1e-7 apart after one step).

Smooth activations (tanh, LeNet-5's own; swish): with ReLU those 1e-7 differences flip the sign of
a pre-activation near 0 now and then, which changes a gradient by a whole term, and training
amplifies it -- measured on LeNet-5/real MNIST, lr 0.05, 50 steps: ReLU 2e-3 apart, tanh 4e-7.
Two standalone fp32 runs on other hardware or thread counts drift apart the same way; the pack
adds nothing a rerun would not.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from tests.conftest import compose_cfg
from tests.test_real_mnist import real_data_dir
from train import train

SEEDS = (0, 1, 2)
BASE = ["trainer.num_sanity_val_steps=0", "trainer.enable_model_summary=false", "~callbacks.progress_bar",
        "trainer.deterministic=true", "data.augment=none", "trainer.precision=32-true"]


@pytest.fixture(autouse=True)
def _deterministic_off_after():
    yield
    # trainer.deterministic=true switched deterministic algorithms on for the process (and with
    # them torch._inductor's `deterministic`, which the conftest guard checks)
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def mnist() -> Path:
    data = real_data_dir()
    if data is None:
        pytest.skip("real MNIST not found (set DATA_DIR)")
    return data


def _cfg(overrides: list[str], run_dir: Path, data: Path):
    cfg = compose_cfg(overrides, run_dir.parent / "composed", data)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)  # a sweep's layout: <setting>/seed=<n>/
    return cfg


def _run_both(tmp_path: Path, overrides: list[str], data: Path, seeds=SEEDS) -> dict:
    """{seed: (standalone metrics, pack metrics, standalone ckpt, pack ckpt)}"""
    for s in seeds:
        train(_cfg([*overrides, f"seed={s}"], tmp_path / f"solo/default/seed={s}", data))
    pack = [*overrides, f"seed={seeds[0]}", f"+pack_seeds=[{','.join(map(str, seeds))}]"]
    train(_cfg(pack, tmp_path / f"pack/default/seed={seeds[0]}", data))
    out = {}
    for s in seeds:
        runs = [tmp_path / kind / "default" / f"seed={s}" for kind in ("solo", "pack")]
        metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
        ckpts = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) if (r / "checkpoints" / "last.ckpt").exists()
                 else None for r in runs]
        out[s] = (*metrics, *ckpts)
    return out


def _weight_gap(a: dict, b: dict) -> float:
    """The largest relative 2-norm difference over the model's float tensors."""
    keys = [k for k in a if k.startswith("model.") and a[k].is_floating_point()]
    assert keys and set(keys) <= set(b), sorted(set(keys) - set(b))[:3]
    return max(((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-12)).item() for k in keys)


def _assert_members_equal_standalone(results: dict, test_images: int) -> None:
    for s, (solo, pack, solo_ckpt, pack_ckpt) in results.items():
        assert solo["status"] == pack["status"] == "completed", (s, solo.get("error"), pack.get("error"))
        assert pack["pack"]["size"] == len(results) and pack["pack"]["members"] == list(results)
        assert pack["seed"] == s and f"seed={s}" in pack["overrides"]
        assert not any(o.startswith("pack_seeds") for o in pack["overrides"])
        assert _weight_gap(solo_ckpt["state_dict"], pack_ckpt["state_dict"]) < 1e-4, s
        assert abs(solo["test/acc"] - pack["test/acc"]) * test_images <= max(1.0, test_images / 10_000), (s, solo, pack)
        assert solo["epochs"] == pack["epochs"] and solo["params"] == pack["params"]
        assert solo_ckpt["global_step"] == pack_ckpt["global_step"]
        assert solo_ckpt["hyper_parameters"] == pack_ckpt["hyper_parameters"]


@pytest.mark.slow
@pytest.mark.real_data
def test_lenet5_pack_of_three_equals_three_standalone_runs(tmp_path, mnist):
    """LeNet-5 on real MNIST, 50 steps each, tested on all 10,000 test images. train_fraction < 1:
    each member draws its own stratified subset (its own data module), as its standalone run does."""
    overrides = ["model=lenet5", "activation=tanh", "data=mnist", *BASE, "trainer.max_epochs=1", "data.train_fraction=0.06",
                 "data.batch_size=64", "trainer.limit_train_batches=50", "trainer.limit_val_batches=2",
                 "data.eval_batch_size=1000", "optimizer.lr=0.05"]
    results = _run_both(tmp_path, overrides, mnist)
    _assert_members_equal_standalone(results, 10_000)
    solo, pack = results[1][0], results[1][1]
    assert pack["test/acc"] > 0.5  # it learned (chance: 0.1)
    # each member's folder reads as a standalone run's: CSV rows, confusion table, checkpoints
    member = tmp_path / "pack/default/seed=1"
    for name in ("csv/metrics.csv", "test_confusion.csv", ".hydra/overrides.yaml", "checkpoints/last.ckpt"):
        assert (member / name).exists(), name
    header = (member / "csv/metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/acc", "val/acc", "test/acc", "lr-SGD", "epoch"} <= set(header)
    assert (member / "test_confusion.csv").read_text() == (tmp_path / "solo/default/seed=1/test_confusion.csv").read_text()
    assert pack["train_images_per_s"] and solo["epochs"] == 1


def test_resnet20_pack_with_batchnorm_equals_standalone_runs(tmp_path, fake_data):
    """ResNet-20: BatchNorm's batch statistics and running averages per member (stacked buffers).
    50 steps of 16 random CIFAR-shaped images (data=synthetic: equality needs no real pixels)."""
    overrides = ["model=resnet20", "activation=swish", "data=synthetic", "data.synthetic_sizes=[800,256]", *BASE,
                 "trainer.max_epochs=1", "trainer.limit_val_batches=1", "data.batch_size=16",
                 "data.eval_batch_size=128", "optimizer.lr=0.02"]
    results = _run_both(tmp_path, overrides, fake_data)
    _assert_members_equal_standalone(results, 256)
    assert results[0][3]["global_step"] == 50
    solo_ckpt, pack_ckpt = results[2][2], results[2][3]
    running = [k for k in solo_ckpt["state_dict"] if k.endswith("running_mean")]
    assert running and _weight_gap({k: solo_ckpt["state_dict"][k] for k in running},
                                   {k: pack_ckpt["state_dict"][k] for k in running}) < 1e-4
    # the optimizer state is the member's own: its momentum buffers are its standalone run's
    solo_m = solo_ckpt["optimizer_states"][0]["state"][0]["momentum_buffer"]
    pack_m = pack_ckpt["optimizer_states"][0]["state"][0]["momentum_buffer"]
    assert solo_m.shape == pack_m.shape and ((solo_m - pack_m).norm() / solo_m.norm()).item() < 1e-4


@pytest.mark.slow
@pytest.mark.real_data
def test_mixup_sam_and_ema_work_per_member(tmp_path, mnist):
    """mixup's draws come from each member's own stream, SAM's epsilon from each member's own
    gradient norm, EMA averages each member's weights: together, each member equals its
    standalone run (which has all three too)."""
    overrides = ["model=lenet5", "activation=tanh", "data=mnist", *BASE, "trainer.max_epochs=1",
                 "data.train_fraction=0.05", "data.batch_size=64", "trainer.limit_train_batches=20", "data.test_fraction=0.2",
                 "optimizer=sam", "optimizer.lr=0.05", "lit.mixup.alpha=0.4", "callbacks=ema",
                 "callbacks.weight_averaging.decay=0.9"]
    results = _run_both(tmp_path, overrides, mnist, seeds=(3, 4))
    _assert_members_equal_standalone(results, 2_000)
    for solo, pack, solo_ckpt, pack_ckpt in results.values():
        assert solo["averaged_weights"] == pack["averaged_weights"] == "ema"
        # the raw (not averaged) weights travel too, and are the member's own
        assert _weight_gap(solo_ckpt["current_model_state"], pack_ckpt["current_model_state"]) < 1e-4


@pytest.mark.slow
@pytest.mark.real_data
def test_augmentation_holdout_clipping_tta_and_swa_work_per_member(tmp_path, mnist):
    """Random crops and flips drawn from each member's own stream, each member tested at its own
    best hold-out epoch (data.val_size > 0), gradient clipping by each member's own norm, TTA and
    SWA: each member equals its standalone run."""
    overrides = ["model=lenet5", "activation=tanh", "data=mnist", *[o for o in BASE if o != "data.augment=none"],
                 "data.augment=crop_flip", "data.crop_padding=2", "trainer.max_epochs=3", "data.train_fraction=0.03",
                 "data.val_size=300", "data.test_fraction=0.1", "data.batch_size=64", "trainer.limit_train_batches=10",
                 "optimizer.lr=0.05", "trainer.gradient_clip_val=0.05", "lit.tta=flip", "callbacks=swa",
                 "callbacks.weight_averaging.start_epoch=0"]
    results = _run_both(tmp_path, overrides, mnist, seeds=(5, 6))
    _assert_members_equal_standalone(results, 1_000)
    for solo, pack, _, _ in results.values():
        assert solo["tested_weights"] == pack["tested_weights"] == "best_val"
        assert solo["val/acc_best_epoch"] == pack["val/acc_best_epoch"]
        assert solo["averaged_weights"] == pack["averaged_weights"] == "swa"
        assert abs(solo["test/acc_tta"] - pack["test/acc_tta"]) * 1_000 <= 1
    for s in (5, 6):  # each folder holds its own best file, as a standalone run's does
        names = sorted(p.name for p in (tmp_path / f"pack/default/seed={s}/checkpoints").iterdir())
        assert names == sorted(p.name for p in (tmp_path / f"solo/default/seed={s}/checkpoints").iterdir())


def test_a_pack_runs_compiled_with_static_shapes(tmp_path, fake_data):
    """trainer.compile: the stacked model goes through the project's compile path (src/lit/speed.py):
    compiled in place (aot_eager here: Dynamo's capture of the vmapped step and AOT autograd,
    without Inductor's minutes of C++ on a CPU), static shapes, no graph compiled inside timed
    steps, and the members still equal their standalone runs."""
    overrides = ["model=lenet5", "activation=tanh", "data=mnist", *BASE, "trainer.max_epochs=2",
                 "trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
                 "data.batch_size=16", "data.eval_batch_size=16", "trainer.compile=default",
                 "trainer.compile_backend=aot_eager"]
    results = _run_both(tmp_path, overrides, fake_data, seeds=(0, 1))
    _assert_members_equal_standalone(results, 32)
    for solo, pack, _, _ in results.values():
        assert pack["compiled"] and pack["compile_fallback"] is None, pack
        assert pack["graphs_compiled_while_timed"] == 0 and pack["compile_graphs"] >= 2  # train + eval


def test_a_pack_larger_than_the_gpu_trains_in_chunks_that_fit():
    """src/packs/memory.py's rule: members that fit in 80 % of the free memory, chunks as even as
    possible; on a CPU the pack trains as asked."""
    from src.packs.memory import chunk_sizes, members_that_fit, plan_chunks

    gib = 2**30
    assert members_that_fit(2 * gib, 80 * gib, 16) == 16
    assert members_that_fit(6 * gib, 40 * gib, 16) == 5  # 32 GiB usable / 6 GiB
    assert members_that_fit(50 * gib, 40 * gib, 16) == 1  # alone it fails as its standalone run would
    assert chunk_sizes(16, 5) == [4, 4, 4, 4] and chunk_sizes(7, 3) == [3, 2, 2] and chunk_sizes(4, 4) == [4]
    from omegaconf import OmegaConf

    cpu = OmegaConf.create({"trainer": {"accelerator": "cpu"}})
    assert plan_chunks(cpu, 16) == [16] and plan_chunks(cpu, 0) == []


def test_a_stacked_model_is_its_members_and_refuses_what_vmap_cannot_do():
    """StackedModel: outputs and gradients of each member equal the member's own (ResNet-20 with
    BatchNorm), its state slices back into the member's state_dict; a cumulative BatchNorm
    (momentum=None) and models of different shapes are refused in one line."""
    import copy

    from torch import nn

    from src.models.cifar_resnet import CifarResNet
    from src.packs.stack import StackedModel

    models = []
    for s in range(3):
        torch.manual_seed(s)
        models.append(CifarResNet(depth=20, act_layer=nn.SiLU))
    alone = [copy.deepcopy(m) for m in models]
    pack = StackedModel(models)
    x = torch.rand(3, 8, 3, 32, 32)
    out = pack(x)
    ref = torch.stack([m(x[k]) for k, m in enumerate(alone)])
    assert out.shape == (3, 8, 10) and (out - ref).abs().max() < 1e-5
    out.square().sum().backward()
    ref.square().sum().backward()
    grads = dict(pack.net.named_parameters())
    for name, p in alone[2].named_parameters():
        assert ((grads[name].grad[2] - p.grad).norm() / p.grad.norm()) < 1e-4, name
    state = pack.member_state(1)
    assert state.keys() == alone[1].state_dict().keys()
    assert all(torch.allclose(state[k].float(), v.float(), atol=1e-6) for k, v in alone[1].state_dict().items())
    assert sum(p[0].numel() for p in pack.net.parameters()) == sum(p.numel() for p in alone[0].parameters()) == 269_722
    shared = pack(x[0], shared=True)  # one batch for every member: member k's own output on it
    assert (shared[1] - alone[1](x[0])).abs().max() < 1e-5
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None))
    with pytest.raises(ValueError, match="momentum=None"):
        StackedModel([bn, copy.deepcopy(bn)])
    with pytest.raises(ValueError, match="one architecture"):
        StackedModel([nn.Linear(3, 4), nn.Linear(3, 5)])
