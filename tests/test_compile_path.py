"""The compiled fast path, checked on the CPU (issue: GPU readiness). Graph counts come from
Dynamo's counters; the `eager` backend captures graphs and guards exactly as Inductor does, without
spending a minute in C++ code generation per graph."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import compose_cfg
from train import train

# LeNet-5 on the fabricated MNIST: 120 training images (batch 11: 10 full batches + 10) and 40
# test images (batch 16: 16 + 16 + 8); the sanity check stays on (it runs under no_grad first).
BASE = ["model=lenet5", "data=mnist", "seed=0", "trainer.max_epochs=2", "data.batch_size=11",
        "data.eval_batch_size=16", "trainer.enable_model_summary=false", "~callbacks.progress_bar",
        "trainer.compile=default", "trainer.compile_backend=eager"]


def _run(overrides, out, data):
    cfg = compose_cfg(BASE + overrides, out, data)
    train(cfg)
    return json.loads((out / "metrics.json").read_text())


# torch's own patch (pytest's monkeypatch would hide the option for the rest of the process)
@torch._dynamo.config.patch(recompile_limit=2, fail_on_recompile_limit_hit=True)  # 2: what one run needs
def test_each_run_in_one_process_compiles_its_own_graphs(fake_data, tmp_path):
    """A reused sweep worker: without a fresh compiler state per run, the second run's graphs
    exceed the per-code limit and (as in a real worker) it would silently run eagerly."""
    first = _run(["activation=relu"], tmp_path / "relu", fake_data)
    second = _run(["activation=tanh"], tmp_path / "tanh", fake_data)
    for m in (first, second):
        assert m["status"] == "completed" and m["compiled"] is True
        assert m["compile_graphs"] == 2  # one training shape, one evaluation shape


@pytest.mark.parametrize("model, optimizer", [("lenet5", "sgd"), ("resnet20", "sam")])
def test_static_shapes_no_compile_inside_timed_steps(model, optimizer, fake_data, tmp_path):
    """Short last batches would compile new graphs inside the timed epoch; SAM's second pass used
    to compile another one (BatchNorm branches on momentum). Every test image still counts once."""
    import pandas as pd

    m = _run([f"model={model}", f"optimizer={optimizer}"], tmp_path, fake_data)
    assert m["status"] == "completed" and m["compiled"] is True
    assert m["compile_graphs"] == 2
    assert m["graphs_compiled_while_timed"] == 0
    assert m["compile_s"] > 0
    confusion = pd.read_csv(tmp_path / "test_confusion.csv", index_col=0).to_numpy()
    assert confusion.sum() == 40  # padding left out, nothing counted twice
    assert m["test/acc"] == pytest.approx(confusion.trace() / 40, abs=1e-6)
    # the short last training batch is dropped when compiled: 10 steps per epoch
    stats = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert stats["global_step"] == 20


def test_padded_evaluation_matches_unpadded(fake_data, tmp_path):
    """The masked padding changes no number: the same weights give the same test loss/accuracy."""
    from hydra.utils import instantiate

    from src.datamodules import build_datamodule

    cfg = compose_cfg(BASE, tmp_path, fake_data)
    dm = build_datamodule(cfg.data)
    dm.setup()
    module = instantiate(cfg.lit, model=instantiate(cfg.model))
    results = {}
    for padded in (False, True):
        dm.static_shapes = padded
        stats = module.stats["test_"]
        stats.reset()
        shapes = set()
        for x, y in dm.test_dataloader():
            shapes.add(tuple(x.shape))
            x, y = dm.on_after_batch_transfer((x, y), 0)
            with torch.no_grad():
                module._step("test", (x, y))
        results[padded] = ([t.item() for t in stats.compute()], shapes)
    assert results[True][1] == {(16, 1, 28, 28)} and len(results[False][1]) == 2
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-6)


def test_sam_second_pass_keeps_running_stats_as_momentum_zero_did():
    """bn_stats_frozen restores the statistics instead of setting momentum 0: same numbers."""
    from torch import nn

    from src.lit.sam import keep_bn_stats

    def old_frozen(module, fn):
        saved = [(m, m.momentum) for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
        for m, _ in saved:
            m.momentum = 0.0
        try:
            return fn()
        finally:
            for m, mom in saved:
                m.momentum = mom

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.BatchNorm2d(2))
    x = torch.randn(8, 3, 10, 10)
    net(torch.randn(8, 3, 10, 10))  # running stats away from their initial values
    twin = __import__("copy").deepcopy(net)
    out_old = old_frozen(twin, lambda: twin(x))
    restore = keep_bn_stats(net)
    out_new = net(x)
    torch.testing.assert_close(out_new, out_old)
    out_new.sum().backward()
    restore()  # after the backward, as SAM.step does
    out_old.sum().backward()
    for a, b in zip(net.modules(), twin.modules()):
        if isinstance(a, nn.BatchNorm2d):
            torch.testing.assert_close(a.running_mean, b.running_mean)
            torch.testing.assert_close(a.running_var, b.running_var)
            assert a.momentum == b.momentum == 0.1
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_compile_auto_falls_back_to_eager(fake_data, tmp_path, monkeypatch):
    """compile=auto: a failing compiler costs one warning, the run trains eagerly and says so."""
    import src.lit.speed as speed

    real = speed.resolve_compile
    monkeypatch.setattr(speed, "resolve_compile", lambda s, d: "default" if s == "auto" else real(s, d))
    with pytest.warns(UserWarning, match="torch.compile failed, training eagerly"):
        m = _run(["trainer.compile=auto", "trainer.compile_backend=tests.compile_helpers.raising_backend"],
                 tmp_path, fake_data)
    assert m["status"] == "completed" and m["compiled"] is False
    assert "simulated compiler failure" in m["compile_fallback"]
    assert m["test/acc"] is not None and m["epochs"] == 2


def test_explicit_compile_mode_fails_loudly(fake_data, tmp_path):
    with pytest.raises(Exception, match="simulated compiler failure"):
        _run(["trainer.compile=default", "trainer.compile_backend=tests.compile_helpers.raising_backend"],
             tmp_path, fake_data)


def test_inference_mode_off_only_when_compiling():
    """Lightning validates under inference_mode; a compiled model must not be captured there."""
    from src.lit.trainer import build_trainer

    kw = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert build_trainer(compile="default", **kw).test_loop.inference_mode is False
    assert build_trainer(compile="off", **kw).test_loop.inference_mode is True
    assert build_trainer(compile="auto", **kw).test_loop.inference_mode is True  # auto = off on a CPU


def test_precision_follows_the_accelerator(monkeypatch, tmp_path):
    """trainer=cpu on a bf16-capable GPU machine trains in fp32, not with bf16 autocast on the CPU."""
    from omegaconf import OmegaConf

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    on_cpu = compose_cfg(["trainer=cpu"], tmp_path)
    default = compose_cfg([], tmp_path)
    assert OmegaConf.select(on_cpu, "trainer.precision") == "32-true"
    assert OmegaConf.select(default, "trainer.precision") == "bf16-mixed"


# ------------------------------------------------------------------ no selection on the test set
def test_validating_on_the_test_split_tests_the_final_weights(fake_data, tmp_path):
    """data.val_size=0: val/acc is test accuracy, so the best epoch is selected on the test set;
    test/acc must be the final epoch's, the peak stays val/acc_best (marked as on the test split)."""
    import pandas as pd

    cfg = compose_cfg(["model=lenet5", "data=mnist", "seed=0", "trainer.max_epochs=3", "data.batch_size=16",
                       "optimizer.lr=0.3", "trainer.enable_model_summary=false", "~callbacks.progress_bar"],
                      tmp_path, fake_data)
    train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    val = pd.read_csv(tmp_path / "csv" / "metrics.csv")["val/acc"].dropna().to_numpy()
    assert len(val) == 3 and m["tested_weights"] == "final" and m["val_is_test_split"] is True
    assert m["test/acc"] == pytest.approx(val[-1], abs=1e-6)  # the last epoch, not the best one
    assert m["val/acc_best"] == pytest.approx(val.max(), abs=1e-6)


class _Ckpt:
    best_model_path, last_model_path = "best.ckpt", "last.ckpt"


@pytest.mark.parametrize("val_size, expected", [(0, None), (5000, "best.ckpt"), (0.1, "best.ckpt")])
def test_only_a_real_holdout_may_pick_the_best_checkpoint(val_size, expected):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from train import _weights_to_test

    cfg = OmegaConf.create({"data": {"val_size": val_size}})
    assert _weights_to_test(cfg, SimpleNamespace(checkpoint_callback=_Ckpt())) == expected


def test_each_run_starts_its_own_peak_memory_count(monkeypatch):
    """peak_gpu_mem_mb must be this run's, not the maximum over a reused worker's jobs."""
    from src.lit.compile_state import fresh_compiler_state

    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(device))
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.append("dynamo"))
    fresh_compiler_state(torch.device("cuda", 0))
    assert calls == ["dynamo", torch.device("cuda", 0)]
    calls.clear()
    fresh_compiler_state(torch.device("cpu"))
    assert calls == ["dynamo"]
