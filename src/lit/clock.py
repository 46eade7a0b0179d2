"""Run timing for the study tables: epoch wall time, training images/s (validation excluded),
compile time kept apart, evaluation images/s. The GPU is synchronised only at phase boundaries
and around a compiled model's warm-up calls, never per step.

Warm-up: the first call of a compiled model for each (stage, batch shape) compiles a graph, and
with CUDA graphs the second records one. Those calls are timed apart (their time is `compile_s`)
and kept out of images/s; a graph compiled outside them would be a hidden compile inside the
timed epoch, and is counted (`graphs_compiled_while_timed`, 0 when static shapes work)."""
from __future__ import annotations

import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RunClock:
    def __init__(self):
        self.epoch_times: list[float] = []
        self.train_times: list[float] = []
        self.train_images = 0
        self.compile_s = 0.0
        self.eval_time = 0.0
        self.eval_images = 0
        self._epoch_images = 0
        self._t_epoch = self._t_train = self._t_eval = None
        self._calls: dict[tuple, int] = {}  # calls so far per (stage, shape), for warm-up
        self._warm: tuple | None = None     # (t0, graphs at t0, stage) while a warm-up call runs
        self.warm_graphs = 0                # graphs compiled during warm-up calls
        self._eval_excluded, self._eval_warm_images = 0.0, 0
        # Sessions: the processes that trained this run. A run resumed from a checkpoint (after a
        # kill -9 too) reports the wall time of all of them, not of its last one alone; what the
        # earlier sessions spent travels in the checkpoint (state_dict), as far as their last
        # checkpoint: work a killed session did after it was lost and is done again, counted once.
        self.session_start = time.perf_counter()  # train() sets its own start here
        self.wall_before_s = 0.0                  # earlier sessions, up to the checkpoint resumed from
        self.sessions_before = 0

    # training epochs -------------------------------------------------------------------
    def start_epoch(self, device) -> None:
        sync(device)
        self._t_epoch = self._t_train = time.perf_counter()
        self._epoch_images = 0
        self._train_done = False

    def count(self, n: int) -> None:
        self._epoch_images += n

    def warmup_start(self, stage: str, shape, calls: int, device, graphs: Callable[[], int]) -> bool:
        """Before a step: True (and the clock started) when it is one of the first ``calls`` calls
        for this stage and batch shape. Evaluation shares one graph (same shapes, no grad).
        ``graphs`` counts the compiled graphs; it is read only around warm-up calls."""
        key = ("eval" if stage != "train" else "train", tuple(shape))
        n = self._calls[key] = self._calls.get(key, 0) + 1
        if n > calls:
            return False
        sync(device)
        self._warm = (time.perf_counter(), graphs(), stage)
        return True

    def warmup_end(self, device, graphs: Callable[[], int], images: int = 0) -> None:
        """After a warm-up step: its time is compile time, its images are not counted."""
        if self._warm is None:
            return
        sync(device)
        t0, g0, stage = self._warm
        dt = time.perf_counter() - t0
        self.compile_s += dt
        self.warm_graphs += graphs() - g0
        if stage == "train":
            self._t_train += dt
            self._epoch_images -= images
        elif stage == "test":
            self._eval_excluded += dt
            self._eval_warm_images += images
        self._warm = None

    def train_done(self, device) -> None:
        if self._t_train is None or self._train_done:
            return
        sync(device)
        self.train_times.append(time.perf_counter() - self._t_train)
        self.train_images += self._epoch_images
        self._train_done = True

    def end_epoch(self, device) -> None:
        self.train_done(device)
        sync(device)
        self.epoch_times.append(time.perf_counter() - self._t_epoch)

    @property
    def last_images_per_s(self) -> float:
        return self._epoch_images / max(self.train_times[-1], 1e-9)

    # evaluation ------------------------------------------------------------------------
    def start_eval(self, device) -> None:
        sync(device)
        self._t_eval = time.perf_counter()
        self._eval_excluded, self._eval_warm_images = 0.0, 0

    def end_eval(self, device, images: int) -> None:
        sync(device)
        self.eval_time += time.perf_counter() - self._t_eval - self._eval_excluded
        self.eval_images += images - self._eval_warm_images

    # summaries and resume --------------------------------------------------------------
    def summary(self) -> dict:
        train = sum(self.train_times)
        return {
            "epochs": len(self.epoch_times),
            "epoch_time_mean_s": round(sum(self.epoch_times) / len(self.epoch_times), 4) if self.epoch_times else None,
            "train_images_per_s": round(self.train_images / train, 1) if train > 0 else None,
            "test_images_per_s": round(self.eval_images / self.eval_time, 1) if self.eval_time > 0 and self.eval_images else None,
            "compile_s": round(self.compile_s, 2),
        }

    def sessions(self, session_wall_s: float) -> dict:
        """metrics.json's resumed, sessions, wall_time_s (all sessions) and session_wall_time_s."""
        return {"resumed": self.sessions_before > 0, "sessions": self.sessions_before + 1,
                "wall_time_s": round(self.wall_before_s + session_wall_s, 3),
                "session_wall_time_s": round(session_wall_s, 3)}

    def state_dict(self) -> dict:
        return {"epoch_times": self.epoch_times, "train_times": self.train_times,
                "train_images": self.train_images, "compile_s": self.compile_s,
                "wall_s": self.wall_before_s + time.perf_counter() - self.session_start,
                "sessions": self.sessions_before + 1}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_times, self.train_times = list(state["epoch_times"]), list(state["train_times"])
        self.train_images, self.compile_s = state["train_images"], state.get("compile_s", 0.0)
        # a checkpoint from before sessions were recorded: one earlier session, its time unknown
        self.wall_before_s, self.sessions_before = state.get("wall_s", 0.0), state.get("sessions", 1)
