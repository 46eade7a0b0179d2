"""The search space and every refusal of a search, before any trial runs (train.py's pre-check)."""
from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from src.cli import check_jobs
from src.errors import ConfigError, UserError
from src.sweeps.optuna_space import grid_of, override, parse_space

SEARCH = ["-m", "hparams_search=lenet_lr_batch"]


def test_the_hydra_optuna_sweeper_syntax_becomes_optuna_distributions():
    space = parse_space({
        "optimizer.lr": "tag(log, interval(1e-4, 1e-1))",
        "data.batch_size": "choice(32, 64, 128)",
        "model.depth": "range(10, 50, step=4)",
        "lit.label_smoothing": "interval(0.0, 0.2)",
        "model.width": "tag(int, interval(8, 64))",
        "activation": "choice(relu, swish)",
    })
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["data.batch_size"] == CategoricalDistribution([32, 64, 128])
    assert space["model.depth"] == IntDistribution(10, 46, step=4)  # stop excluded, as Hydra's range
    assert space["lit.label_smoothing"] == FloatDistribution(0.0, 0.2)
    assert space["model.width"] == IntDistribution(8, 64)
    assert space["activation"] == CategoricalDistribution(["relu", "swish"])
    assert grid_of({"d": space["model.depth"]})["d"] == list(range(10, 47, 4))
    # a sampled value goes back to the job as an override Hydra parses to the same value
    assert override("optimizer.lr", 1e-05) == "optimizer.lr=1e-05" and override("activation", "relu") == "activation=relu"


@pytest.mark.parametrize("params, message", [
    ({}, "the search space is empty"),
    ({"optimizer.lr": "interval(0.1, 0.01)"}, "needs low < high"),
    ({"optimizer.lr": "tag(log, interval(0, 0.1))"}, "a log-scaled interval needs low > 0"),
    ({"optimizer.lr": "interval(0.1"}, "does not parse"),
    ({"data.batch_size": "choice()"}, "empty choice is not legal"),
    ({"model.depth": "range(10, 5)"}, "needs start < stop"),
    ({"optimizer.lr": "0.1"}, "is a fixed value, not a search range"),
    ({"optimizer.lr": "tag(fancy, interval(0.1, 1))"}, "unknown tag"),
])
def test_malformed_spaces_are_refused_in_one_line(params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_space(params)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("extra, message", [
    (["optimizer.lrr=interval(0.1,1.0)"], "optimizer.lrr: no such key in the config"),
    (["lit.label_smoothing=interval(0.0,1.5)"], "reaches 1.5, which the run refuses"),
    (["data.batch_size=choice(0,32)"], "data.batch_size"),
    (["activation=relu,nope"], "unknown activation 'nope'"),
    (["seed=0,1,2"], "seeds are not searched; use hydra.sweeper.seeds_per_trial"),
    (["optimized_metric=test/acc"], "choose hyperparameters on the test set"),
    (["data.val_size=0"], "validates on the test split"),
    (["hydra.sweeper.sampler=grid"], "sampler=grid needs a finite grid"),
    (["hydra.sweeper.sampler=annealing"], "sampler=annealing is not valid"),
    (["hydra.sweeper.direction=up"], "direction=up is not valid"),
    (["hydra.sweeper.n_trials=0"], "n_trials and seeds_per_trial must be >= 1"),
])
def test_a_bad_search_is_refused_before_any_trial(extra, message, tmp_path):
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as e:
        check_jobs([*SEARCH, f"hydra.sweep.dir={tmp_path}", *extra])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "optuna.db").exists()  # nothing ran, no study was created


def test_a_good_search_passes_the_pre_check(tmp_path):
    check_jobs([*SEARCH, f"hydra.sweep.dir={tmp_path}", "trainer.max_epochs=1"])
    # ranges on the command line join the preset's space (hydra-optuna-sweeper's syntax)
    check_jobs([*SEARCH, f"hydra.sweep.dir={tmp_path}", "lit.label_smoothing=interval(0.0,0.2)", "activation=relu,tanh"])
    check_jobs(["-m", "hparams_search=cifar_sgd", f"hydra.sweep.dir={tmp_path}"])
