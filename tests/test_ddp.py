"""DDP (trainer=ddp, src/ddp/): rank-sharded loading, exact distributed evaluation, rank-0-only
outputs, resume, SLURM parameters and sweep guards. CPU, Gloo, 2 processes.

The process tests share one 1-rank and one 2-rank LeNet-5 run on 960 real MNIST training images
(20 global batches of 48 per epoch: no short last batch, so plain SGD must give the same weights)
and 503 test images (2 shards of 251 and 252, evaluated in batches of 251: rank 0 ends with a
padding-only batch)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from src.compose import CONF_DIR
from src.datamodules.loader import TensorBatchLoader, eval_steps, shard_bounds
from src.ddp.batch import per_process_batch
from src.ddp.guards import check_ddp_command
from src.ddp.ranks import launch_rank
from src.errors import ConfigError
from src.lit.stage_stats import StageStats
from tests.ddp_helpers import max_weight_diff, metrics, run_train
from tests.test_real_mnist import real_data_dir


# ----------------------------------------------------------------------------- the loader
def _ranks(n: int, batch: int, world: int, epoch: int, seed: int = 7) -> list[list[torch.Tensor]]:
    x, y = torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n)
    return [[b for _, b in TensorBatchLoader(x, y, batch, shuffle=True, seed=seed, rank=r, world=world,
                                             epoch_fn=lambda: epoch)] for r in range(world)]


@pytest.mark.parametrize("n,batch,world", [(960, 24, 2), (1000, 24, 2), (103, 4, 3), (7, 4, 2)])
def test_every_training_index_once_per_epoch_across_ranks(n, batch, world):
    previous = None
    for epoch in range(3):
        ranks = _ranks(n, batch, world, epoch)
        assert len({len(r) for r in ranks}) == 1  # equal step counts: no rank waits in an all-reduce
        for step in zip(*ranks):
            assert len({len(b) for b in step}) == 1  # equal batch sizes: averaged gradients are the global mean
        seen = torch.cat([b for r in ranks for b in r])
        assert len(seen) == len(seen.unique())  # nothing twice
        assert n - len(seen) < world  # at most world-1 skipped (an uneven remainder), none when it divides
        if n % (batch * world) == 0:
            assert torch.equal(seen.sort().values, torch.arange(n))
        shard0 = set(torch.cat(ranks[0]).tolist())
        assert shard0 != previous  # shards change from epoch to epoch
        previous = shard0


def test_ranks_together_draw_the_single_process_batches():
    """Step i of 2 ranks with batch 24 = step i of 1 process with batch 48 (same permutation)."""
    one = _ranks(960, 48, 1, epoch=2)[0]
    two = _ranks(960, 24, 2, epoch=2)
    assert len(one) == len(two[0]) == 20
    for i, whole in enumerate(one):
        assert torch.equal(torch.cat([two[0][i], two[1][i]]), whole)


def test_single_process_loader_keeps_its_order_and_follows_the_epoch():
    """world=1 draws what it always drew (seed*100003 + epoch); epoch_fn replaces the own count."""
    x, y = torch.zeros(50, 1, 1, 1, dtype=torch.uint8), torch.arange(50)
    own = TensorBatchLoader(x, y, 8, shuffle=True, seed=3)
    first, second = [torch.cat([b for _, b in own]) for _ in range(2)]
    for epoch, got in ((0, first), (1, second)):
        g = torch.Generator().manual_seed(3 * 100_003 + epoch)
        assert torch.equal(got, torch.randperm(50, generator=g))
    resumed = TensorBatchLoader(x, y, 8, shuffle=True, seed=3, epoch_fn=lambda: 1)  # a run resumed at epoch 1
    assert torch.equal(torch.cat([b for _, b in resumed]), second)


@pytest.mark.parametrize("n,world,batch", [(503, 2, 251), (10, 4, 3), (3, 4, 2), (1000, 3, 64)])
def test_evaluation_shards_count_every_image_once(n, world, batch):
    x, y = torch.arange(n, dtype=torch.uint8).view(-1, 1, 1, 1), torch.arange(n)
    steps = eval_steps(n, world, batch)
    got = []
    for r in range(world):
        lo, hi = shard_bounds(n, r, world)
        loader = TensorBatchLoader(x[lo:hi], y[lo:hi], batch, steps=steps, pad_last=True)
        batches = list(loader)
        assert len(batches) == len(loader) == steps  # every rank the same number of steps
        assert all(len(b) == batch for _, b in batches) or n <= batch  # compiled: one evaluation shape
        got += [b[b >= 0] for _, b in batches]
    assert torch.equal(torch.cat(got).sort().values, torch.arange(n))  # once each, padding is label -1


def test_padding_only_batch_adds_nothing_to_the_stats():
    stats = StageStats()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    stats.update(logits, torch.tensor([0, 0]), torch.tensor(0.5), masked=True)
    stats.update(logits, torch.tensor([-1, -1]), torch.tensor(float("nan")), masked=True)  # CE of nothing
    acc, loss = stats.compute()
    assert acc.item() == 0.5 and loss.item() == 0.5


def _evaluate(world: int, rank: int, model: torch.nn.Module):
    """StageStats and confusion counts of one rank's test loader (the real data module, synthetic
    data: 101 test images, shards of 50 and 51 in batches of 25 -> rank 0 ends with padding only)."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    from src.datamodules.image_classification import ImageClassificationDataModule
    from src.datamodules.sources import Synthetic

    dm = ImageClassificationDataModule(Synthetic(sizes=(64, 101)), channels=1, image_size=8, batch_size=16,
                                       eval_batch_size=25, verify_counts=False)
    strategy = type("S", (), {"root_device": torch.device("cpu")})()
    dm.trainer = type("T", (), {"global_rank": rank, "world_size": world, "strategy": strategy})()
    dm.setup("test")
    dm.static_shapes = True  # compiled: padded batches
    stats, confusion = StageStats(), MulticlassConfusionMatrix(10, ignore_index=-1)
    steps = 0
    for x, y in dm.test_dataloader():
        logits = model(((x.float() / 255) - 0.5) / 0.5)
        loss = torch.nn.functional.cross_entropy(logits, y, ignore_index=-1)
        stats.update(logits, y, loss, masked=True)
        confusion.update(logits, y)
        steps += 1
    return stats, confusion.compute(), steps


def test_shards_evaluate_the_same_weights_exactly_as_one_process():
    """What the ranks' states sum to (StageStats and the confusion matrix are summed over the
    processes) equals the single process's evaluation: each image once, padding left out."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    one, c_one, _ = _evaluate(1, 0, model)
    parts = [_evaluate(2, r, model) for r in range(2)]
    assert parts[0][2] == parts[1][2] == 3  # equal steps: 50 images = 25+25+padding, 51 = 25+25+1
    assert sum(int(p[0].seen) for p in parts) == int(one.seen) == 101
    assert sum(int(p[0].correct) for p in parts) == int(one.correct)
    assert torch.equal(parts[0][1] + parts[1][1], c_one)
    assert abs(sum(p[0].loss_sum.item() for p in parts) - one.loss_sum.item()) < 1e-4


# ------------------------------------------------------------------------ options and guards
def test_global_batch_size_divides_or_is_refused():
    assert per_process_batch(256, 4) == 64
    with pytest.raises(ConfigError, match="data.batch_size=100 .* 3 processes"):
        per_process_batch(100, 3)


def test_global_batch_refused_on_the_command_line():
    bad = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "data.batch_size=63",
           "data.batch_size_is_global=true"]
    with pytest.raises(ConfigError, match="data.batch_size=63 .* 2 processes"):
        check_ddp_command(bad)
    check_ddp_command([*bad[:-2], "data.batch_size=64", "data.batch_size_is_global=true"])


def test_global_batch_is_refused_before_any_data_is_read(monkeypatch):
    from src.datamodules.image_classification import ImageClassificationDataModule
    from src.datamodules.sources import Synthetic

    dm = ImageClassificationDataModule(Synthetic(), batch_size=10, batch_size_is_global=True)
    monkeypatch.setattr(dm, "_load", lambda: pytest.fail("data read before the batch size was checked"))
    dm.trainer = type("T", (), {"global_rank": 1, "world_size": 4})()
    with pytest.raises(ConfigError, match="does not divide over 4"):
        dm.setup("fit")


def test_rank_from_the_launchers_variables(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert launch_rank() == 0  # the launching process
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch_rank() == 1  # started by Lightning
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")
    assert launch_rank() != 0  # first process of the second machine
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("NODE_RANK")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert launch_rank() == 0  # a one-task SLURM job (a sweep's job) is no DDP rank
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert launch_rank() == 3


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("overrides,nodes,tasks,gpus", [
    (["trainer=ddp", "trainer.num_nodes=2"], 2, 1, 1),
    (["trainer=ddp", "trainer.num_nodes=2", "hydra.launcher.gpus_per_node=8"], 2, 8, 8),
    (["trainer=ddp", "trainer.devices=4", "hydra.launcher.gpus_per_node=4"], 1, 4, 4),
    (["trainer.devices=2"], 1, 1, 1),  # not DDP: one task on one node, as before
])
def test_slurm_launcher_parameters_of_a_ddp_job(overrides, nodes, tasks, gpus):
    """The submitit parameters as the real config composes them (the launcher's own view)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra.utils import instantiate

    cfg = _compose(["hydra/launcher=slurm", *overrides])
    launcher = instantiate(cfg.hydra.launcher)
    assert (launcher.params["nodes"], launcher.params["tasks_per_node"], launcher.params["gpus_per_node"]) == \
        (nodes, tasks, gpus)


def test_slurm_refuses_devices_that_are_not_the_nodes_gpus():
    cfg = _compose(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=2", "hydra.launcher.gpus_per_node=4"])
    with pytest.raises(Exception, match="trainer.devices=2 but hydra.launcher.gpus_per_node=4"):
        OmegaConf.select(cfg, "hydra.launcher.tasks_per_node")


def test_ddp_sweep_refused_under_the_parallel_launcher_only():
    sweep = ["-m", "model=lenet5", "data=mnist", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
             "seed=0,1"]
    with pytest.raises(ConfigError, match="hydra/launcher=sequential"):
        check_ddp_command(sweep)
    check_ddp_command([*sweep, "hydra/launcher=sequential"])
    check_ddp_command([*sweep, "hydra/launcher=slurm"])
    check_ddp_command(["-m", "trainer=ddp", "trainer.accelerator=cpu", "seed=0,1"])  # 1 process each: fine
    check_ddp_command([a for a in sweep if a != "-m"])  # a single DDP run


def test_ranks_start_as_single_runs_of_the_job(tmp_path):
    """Rank 1's command: train.py with the job's overrides and folder, never `-m` or the sweep."""
    from src.ddp.strategy import TRAIN_SCRIPT, rank_command

    cfg = _compose(["model=lenet5", "seed=3", "optimizer.lr=0.05"])
    run_dir = tmp_path / "multirun" / "model=lenet5,optimizer.lr=0.05" / "seed=3"
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir, cfg.hydra.runtime.cwd = str(run_dir), str(tmp_path)
        cfg.hydra.job.name = "train"
    HydraConfig.instance().set_config(cfg)
    command, cwd = rank_command(1)
    assert command[1] == str(TRAIN_SCRIPT) and cwd == str(tmp_path) and "-m" not in command
    assert command[2:5] == ["model=lenet5", "seed=3", "optimizer.lr=0.05"]
    assert f"hydra.run.dir='{run_dir}'" in command and "hydra.output_subdir=null" in command


# ------------------------------------------------------------------- 2 processes, real MNIST
COMMON = ["model=lenet5", "data=mnist", "trainer.accelerator=cpu", "data.train_fraction=0.016",
          "data.test_fraction=0.0503", "data.eval_batch_size=251", "trainer.max_epochs=2", "optimizer.momentum=0.9",
          "optimizer.nesterov=false", "optimizer.weight_decay=0.0", "optimizer.lr=0.05", "scheduler=constant",
          "logger=none", "~callbacks.progress_bar", "trainer.enable_model_summary=false",
          "trainer.num_sanity_val_steps=0", "lit.log_images=false"]
ONE = [*COMMON, "data.batch_size=48"]
TWO = [*COMMON, "trainer=ddp", "trainer.devices=2", "data.batch_size=48", "data.batch_size_is_global=true"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if real_data_dir() is None:
        pytest.skip("real MNIST not found (set DATA_DIR)")
    root = tmp_path_factory.mktemp("ddp")
    for name, overrides in (("one", ONE), ("two", TWO)):
        done = run_train(overrides, root / name)
        if done.returncode != 0 and name == "two":
            # once in a full-suite run on the 2-core machine rank 1 vanished mid-run (gloo: "connection
            # closed by peer") and could not be reproduced alone: one retry, with the first output kept
            # for the report, so that a real failure still fails (twice) and a flake is visible
            import warnings

            warnings.warn(f"2-rank run failed once, retried: {done.stdout[-1500:]}")
            import shutil

            shutil.rmtree(root / name, ignore_errors=True)
            done = run_train(overrides, root / name)
        assert done.returncode == 0, done.stdout[-3000:]
    return root


@pytest.mark.slow
@pytest.mark.real_data
def test_two_ranks_train_as_one_with_the_same_global_batch(runs):
    one, two = metrics(runs / "one"), metrics(runs / "two")
    diff = max_weight_diff(runs / "one", runs / "two")
    print(f"1 rank: test/acc {one['test/acc']:.4f} loss {one['test/loss']:.6f} epoch {one['epoch_time_mean_s']:.2f} s; "
          f"2 ranks: test/acc {two['test/acc']:.4f} loss {two['test/loss']:.6f} epoch {two['epoch_time_mean_s']:.2f} s; "
          f"max weight diff {diff:.2e}")
    assert diff < 1e-4  # plain SGD, same orders, averaged gradients: float rounding only
    assert abs(one["test/loss"] - two["test/loss"]) < 1e-4
    assert abs(one["test/acc"] - two["test/acc"]) <= 1 / 503
    assert one["test/acc"] > 0.3  # it learned (40 steps of SGD with momentum), well above chance
    # each test image counted once across the ranks (a duplicating sampler would count 2 x 503)
    c1, c2 = (pd.read_csv(runs / d / "test_confusion.csv", index_col=0) for d in ("one", "two"))
    assert c2.to_numpy().sum() == 503 and c1.equals(c2)
    assert not (runs / "two" / ".hydra" / "overrides.yaml").read_text().count("hydra.run.dir")  # rank 0's own
    assert sorted(p.name for p in (runs / "two").glob("*.log")) == ["train.log", "train_rank1.log"]


@pytest.mark.slow
@pytest.mark.real_data
def test_compiled_run_resumed_after_kill_matches_the_uninterrupted_eager_run(runs, tmp_path):
    """kill -9 of the launching process in the middle of epoch 1, then resume=true: epoch 1 is
    trained again with epoch 1's order (not epoch 0's, as a loader counting its own passes from 0
    would draw), so the weights are the uninterrupted run's. The resumed half runs compiled -- in
    place, before DDP wraps the model, Dynamo's DDP optimiser left on -- with the eager backend
    (fast, and graph capture apart from Inductor's numerics), so the comparison also checks
    compiled == eager (training epoch 1, validation and test).
    (One test for both: each 2-process run costs ~10-20 s of the file's budget.)"""
    run = tmp_path / "killed"
    compiled = [*TWO, "trainer.compile=default", "trainer.compile_backend=eager"]
    killed = run_train([*TWO, "+callbacks.kill._target_=tests.ddp_helpers.KillAt", "+callbacks.kill.epoch=1",
                        "+callbacks.kill.batch=5"], run)
    assert killed.returncode == -9, killed.stdout[-3000:]
    assert not (run / "metrics.json").exists() and (run / "checkpoints" / "last.ckpt").exists()
    resumed = run_train([*compiled, "resume=true"], run)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    m = metrics(run)
    assert m["status"] == "completed" and m["epochs"] == 2
    assert m["compiled"] is True and m["compile_fallback"] is None
    assert max_weight_diff(runs / "two", run) < 1e-6
    assert abs(m["test/loss"] - metrics(runs / "two")["test/loss"]) < 1e-6
