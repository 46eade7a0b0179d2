"""The Optuna search with the real train.py: pruning inside a run, and a real search on MNIST."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import torch

from src.sweeps.optuna_study import make_pruner
from src.sweeps.pruning import TrialPruning
from tests.conftest import QUICK, ROOT, compose_cfg
from tests.test_real_horses import horses_dir

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_with_good_trials(storage: str, name: str, startup: int = 2) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                pruner=make_pruner("median", startup_trials=startup, warmup_epochs=0))
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(3):  # three finished trials that reached val/acc 0.99 from their first epoch
        study.add_trial(optuna.trial.create_trial(params={"x": i / 3}, distributions=dist, value=0.99,
                                                  intermediate_values={0: 0.99, 1: 0.99, 2: 0.99}))
    return study


def stored(study: optuna.Study, trial) -> optuna.trial.FrozenTrial:
    """``trial`` as the storage holds it now (public API: trials are looked up by number)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)


def fake_trainer(acc: float, epoch: int) -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=False, current_epoch=epoch, should_stop=False,
                           callback_metrics={"val/acc": torch.tensor(acc)})


def test_the_pruner_stops_a_clearly_worse_trial_and_spares_a_good_one():
    study = study_with_good_trials("sqlite:///:memory:", "prune")
    bad, good = TrialPruning(study.ask(), "val/acc"), TrialPruning(study.ask(), "val/acc")
    for epoch, (b, g) in enumerate([(0.30, 0.99), (0.35, 0.995)]):
        tb, tg = fake_trainer(b, epoch), fake_trainer(g, epoch)
        good.on_validation_end(tg, None)
        assert not tg.should_stop
        if epoch == 0:  # the bad one stops at once (a stopped trainer calls it no more)
            bad.on_validation_end(tb, None)
            assert tb.should_stop and bad.pruned_epoch == 0
    assert stored(study, bad.trial).intermediate_values == {0: pytest.approx(0.30)}
    assert good.pruned_epoch is None and len(stored(study, good.trial).intermediate_values) == 2


def test_the_last_epoch_is_never_pruned():
    """A trial that trails the others at its last epoch has finished: its result is reported and
    kept (pruning it then would throw the finished run away)."""
    study = study_with_good_trials("sqlite:///:memory:", "last")
    bad = TrialPruning(study.ask(), "val/acc")
    trainer = fake_trainer(0.30, 2)
    trainer.max_epochs = 3
    bad.on_validation_end(trainer, None)
    assert not trainer.should_stop and bad.pruned_epoch is None
    assert stored(study, bad.trial).intermediate_values == {2: pytest.approx(0.30)}
    early = TrialPruning(study.ask(), "val/acc")  # the same value one epoch earlier is pruned
    trainer = fake_trainer(0.30, 1)
    trainer.max_epochs = 3
    early.on_validation_end(trainer, None)
    assert trainer.should_stop and early.pruned_epoch == 1


def test_a_pruned_train_run_stops_and_records_it(tmp_path, fake_data):
    """train() as a search trial: its first val/acc trails the study's median, so it stops after
    one of its three epochs, still tests, and metrics.json says pruned."""
    from train import train

    sweep = tmp_path / "search"
    sweep.mkdir()
    study = study_with_good_trials(f"sqlite:///{sweep / 'optuna.db'}", sweep.name)
    trial = study.ask()
    out = sweep / "trial_3"
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK, "trainer.max_epochs=3", "hydra/sweeper=optuna",
                       f"++trial={trial.number}", f"hydra.sweep.dir={sweep}", "optimized_metric=val/acc_best",
                       "data.val_size=16", "hydra.sweeper.pruner_warmup_epochs=0",
                       "hydra.sweeper.pruner_startup_trials=2"], out, data_dir=fake_data)
    train(cfg)
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "pruned" and m["pruned_epoch"] == 0
    assert m["epochs"] == 1 and m["test/acc"] is not None
    reported = stored(study, trial).intermediate_values
    assert reported == {0: pytest.approx(m["val/acc_best"])}


@pytest.mark.slow
@pytest.mark.real_data
def test_a_real_search_on_mnist_writes_its_report(tmp_path):
    data = horses_dir()  # the real datasets' folder (MNIST beside horses-or-humans)
    if data is None:
        pytest.skip("real datasets not found (set DATA_DIR)")
    sweep = tmp_path / "lenet"
    cmd = [sys.executable, "train.py", "-m", "hparams_search=lenet_lr_batch", "data.train_fraction=0.1",
           "data.test_fraction=0.1", "trainer.max_epochs=1", "hydra.sweeper.n_trials=8", "hydra.sweeper.pruner=none", f"hydra.sweep.dir={sweep}",
           f"paths.data_dir={Path(data).resolve()}", f"paths.cache_dir={tmp_path / 'cache'}", "~callbacks.progress_bar",
           "trainer.enable_model_summary=false", "hydra.job_logging.root.level=WARNING"]
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = pd.read_csv(sweep / "trials.csv")
    assert len(trials) == 8 and (trials["state"] == "complete").all()
    assert set(trials["params.data.batch_size"]) <= {32, 64, 128, 256, 512}
    assert trials["params.optimizer.lr"].between(1e-4, 1e-1).all()
    assert trials["value"].max() - trials["value"].min() > 0.2  # lr matters: the best trial clearly wins
    assert {"search.md", "history.png", "importance.png", "optuna.db"} <= {p.name for p in sweep.iterdir()}
    best = trials.loc[trials["value"].idxmax()]
    assert f"**Best trial {int(best['number'])}**" in (sweep / "search.md").read_text()
    # each trial's value is its run's val/acc_best (the 10 % hold-out), never a test metric
    run = json.loads(next((sweep / f"trial={int(best['number']):03d}").glob("seed=0/metrics.json")).read_text())
    assert run["val/acc_best"] == pytest.approx(best["value"]) and run["tested_weights"] == "best_val"


def test_every_ddp_rank_joins_rank_zeros_pruning_decision(monkeypatch):
    """Ranks other than 0 hold no trial (they are started without the hydra overrides) but must
    stop with rank 0: a rank that stopped alone, or a broadcast one rank never joins, hangs DDP."""
    from omegaconf import OmegaConf

    from src.sweeps.pruning import trial_pruning

    monkeypatch.setenv("LOCAL_RANK", "1")
    follower = trial_pruning(OmegaConf.create({"trial": 4, "optimized_metric": "val/acc_best"}))
    assert follower is not None and follower.trial is None and follower.monitor == "val/acc"
    assert trial_pruning(OmegaConf.create({"trial": None, "optimized_metric": "val/acc_best"})) is None
    told = []

    def broadcast(value, src):  # rank 0 decided to prune; this rank's own vote (False) is replaced
        told.append(value)
        return True

    trainer = SimpleNamespace(sanity_checking=False, current_epoch=2, should_stop=False, world_size=2,
                              callback_metrics={}, strategy=SimpleNamespace(broadcast=broadcast))
    follower.on_validation_end(trainer, None)  # no val/acc on this rank: it still joins the broadcast
    assert told == [False] and trainer.should_stop and follower.pruned_epoch == 2


def test_the_importance_caption_names_its_evaluator_and_warns_on_few_trials():
    from src.sweeps.optuna_report import importance_caption, importance_evaluator

    study = optuna.create_study(direction="maximize")
    for x in (0.1, 0.5, 0.9, 0.3):
        study.enqueue_trial({"x": x})
        study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=1)
    evaluator, name = importance_evaluator()
    assert name == "fANOVA" and type(evaluator).__name__ == "FanovaImportanceEvaluator"  # scikit-learn is there
    assert importance_caption(study, name) == "fANOVA, 4 complete trials; fewer than 10: a rough guide only"
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=6)
    assert importance_caption(study, "PED-ANOVA") == "PED-ANOVA, 10 complete trials"
