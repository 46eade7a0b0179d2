"""Make the documented trainer options combine with the callback and logger groups.

Lightning refuses several pairings that our config groups make easy to ask for: a progress-bar
callback with `enable_progress_bar=false` (the README's own sweep example), LearningRateMonitor with
`logger=none`, a ModelCheckpoint with `enable_checkpointing=false`. A flag that turns a feature off
wins over the callback that provides it, and `logger=none` drops the callbacks that write only to a
logger. Whatever Lightning still refuses reaches the user as one line (`lightning_misconfiguration`
in src/errors.py, used by src/cli.py).

The model summary is replaced by one without Lightning's FLOPs column and "Total FLOPs: 0" line:
Lightning counts FLOPs only through `example_input_array`, which we do not set (its forward pass at
summary time would compile an extra graph for another batch shape).
"""
from __future__ import annotations

import logging

from lightning.pytorch.callbacks import (Callback, DeviceStatsMonitor, LearningRateMonitor, ModelCheckpoint,
                                         ModelSummary, ProgressBar, RichModelSummary)
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

from src.log_filters import hide_summary_note

# callbacks that raise "... with `Trainer` that has no logger" when there is none
NEEDS_LOGGER = (LearningRateMonitor, DeviceStatsMonitor)


def has_logger(logger) -> bool:
    """Lightning's reading of Trainer(logger=...): None/True = its default logger, False or [] = none."""
    if logger is None or logger is True:
        return True
    if logger is False:
        return False
    try:
        return len(logger) > 0
    except TypeError:
        return True  # a single Logger object


def reconcile(callbacks: list[Callback], kwargs: dict) -> tuple[list[Callback], dict]:
    """The callbacks and Trainer kwargs with every flag's "off" applied to the callbacks, plus the
    duration estimate (threshold: the `estimate_minutes` kwarg, taken out of the Trainer's kwargs)."""
    from src.lit.estimate import DurationEstimate

    kwargs = dict(kwargs)
    estimate_minutes = kwargs.pop("estimate_minutes", 30.0)  # ours, not a Trainer argument
    drop: list[type] = []
    if kwargs.get("enable_progress_bar") is False:
        drop.append(ProgressBar)
    if not has_logger(kwargs.get("logger")):
        drop.extend(NEEDS_LOGGER)
    if kwargs.get("enable_checkpointing") is False:
        drop.append(ModelCheckpoint)
    if kwargs.get("enable_model_summary") is False:
        drop.append(ModelSummary)
    callbacks = [c for c in callbacks if not isinstance(c, tuple(drop))]
    if kwargs.get("enable_model_summary") is not False and not any(isinstance(c, ModelSummary) for c in callbacks):
        callbacks.append(Summary())  # Lightning adds its own only when none is given
        hide_summary_note()  # and notes, every run, that it found ours (src/log_filters.py)
    if not any(isinstance(c, DurationEstimate) for c in callbacks):  # here, so callbacks=none has it too
        callbacks.append(DurationEstimate(estimate_minutes))
    return callbacks, kwargs


_Base = RichModelSummary if _RICH_AVAILABLE else ModelSummary


class Summary(_Base):
    """Lightning's model summary (the rich table when rich is installed) without FLOPs while they
    were not counted; with a counted total (an `example_input_array`) it is Lightning's own."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        if total_flops:
            return _Base.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                   total_training_modes, total_flops, **summarize_kwargs)
        from lightning.pytorch.utilities.model_summary.model_summary import (_format_summary_table,
                                                                             get_formatted_model_size,
                                                                             get_human_readable_count)

        data = [col for col in summary_data if col[0] != "FLOPs"]
        if not _RICH_AVAILABLE:
            table = _format_summary_table(total_parameters, trainable_parameters, model_size,
                                          total_training_modes, 0, *data)
            logging.getLogger("lightning.pytorch.callbacks.model_summary").info(
                "\n" + table.rsplit("\n", 1)[0])  # its last line is "0  Total Flops"
            return
        from rich import get_console
        from rich.table import Table

        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in data:
            table.add_column(name, style="dim" if name == " " else None,
                             justify="right" if name in ("Params", "In sizes", "Out sizes") else "left")
        for row in zip(*(values for _, values in data)):
            table.add_row(*row)
        grid = Table.grid(expand=True)
        grid.add_column()
        count = get_human_readable_count
        for label, value in (("Trainable params", count(int(trainable_parameters))),
                             ("Non-trainable params", count(int(total_parameters - trainable_parameters))),
                             ("Total params", count(int(total_parameters))),
                             ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
                             ("Modules in train mode", total_training_modes["train"]),
                             ("Modules in eval mode", total_training_modes["eval"])):
            grid.add_row(f"[bold]{label}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(grid)
