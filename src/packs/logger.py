"""The pack's one Lightning logger, standing for every member's own loggers (TensorBoard and CSV,
built from each member's config into its run folder): ``member<k>/<name>`` goes to member k as
``<name>``; what holds for the whole pack (the epoch, the learning rate, the epoch's wall time) goes
to every member still training. Each member's CSV and event files then read as a standalone run's."""
from __future__ import annotations

from lightning.pytorch.loggers import Logger, TensorBoardLogger

from src.packs.module import PREFIX


class PackLogger(Logger):
    def __init__(self, members: list[list[Logger]], alive: list[bool]):
        super().__init__()
        self.members, self.alive = members, alive  # alive: the PackModule's own list

    @property
    def name(self) -> str:
        return "pack"

    @property
    def version(self) -> None:
        return None  # no "v_num" in the progress bar: the members' folders have no versions

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        shared: dict = {}
        own: dict[int, dict] = {}
        for key, value in metrics.items():
            head, _, rest = key.partition("/")
            if head.startswith(PREFIX) and head[len(PREFIX):].isdigit() and rest:
                own.setdefault(int(head[len(PREFIX):]), {})[rest] = value
            else:
                shared[key] = value
        for k, loggers in enumerate(self.members):
            values = {**shared, **own.get(k, {})} if self.alive[k] or k in own else {}
            if values.keys() - {"epoch"}:
                for lg in loggers:
                    lg.log_metrics(values, step)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The pack's own (none): each member's hyperparameters are logged with its result."""

    def tensorboard(self, k: int):
        """Member k's TensorBoard writer, or None."""
        return next((lg.experiment for lg in self.members[k] if isinstance(lg, TensorBoardLogger)), None)

    def save(self) -> None:
        for loggers in self.members:
            for lg in loggers:
                lg.save()

    def finalize(self, status: str) -> None:
        for loggers in self.members:
            for lg in loggers:
                lg.finalize(status)
