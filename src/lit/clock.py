"""Run timing for the study tables: epoch wall time, training images/s (validation excluded),
compile time kept apart, evaluation images/s. The GPU is synchronised only at phase boundaries,
never per step."""
from __future__ import annotations

import time

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

    # training epochs -------------------------------------------------------------------
    def start_epoch(self, device) -> None:
        sync(device)
        self._t_epoch = self._t_train = time.perf_counter()
        self._epoch_images = 0
        self._train_done = False

    def count(self, n: int) -> None:
        self._epoch_images += n

    def exclude_warmup(self, device) -> None:
        """After a compiled model's first step: its compile time is reported, not averaged in."""
        sync(device)
        now = time.perf_counter()
        self.compile_s += now - self._t_train
        self._t_train, self._epoch_images = now, 0

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

    def end_eval(self, device, images: int) -> None:
        sync(device)
        self.eval_time += time.perf_counter() - self._t_eval
        self.eval_images += images

    # summaries and resume --------------------------------------------------------------
    def summary(self) -> dict:
        train = sum(self.train_times)
        return {
            "epochs": len(self.epoch_times),
            "epoch_time_mean_s": round(sum(self.epoch_times) / len(self.epoch_times), 4) if self.epoch_times else None,
            "train_images_per_s": round(self.train_images / train, 1) if train > 0 else None,
            "test_images_per_s": round(self.eval_images / self.eval_time, 1) if self.eval_time > 0 else None,
            "compile_s": round(self.compile_s, 2),
        }

    def state_dict(self) -> dict:
        return {"epoch_times": self.epoch_times, "train_times": self.train_times,
                "train_images": self.train_images, "compile_s": self.compile_s}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_times, self.train_times = list(state["epoch_times"]), list(state["train_times"])
        self.train_images, self.compile_s = state["train_images"], state.get("compile_s", 0.0)
