"""last.ckpt (issue 12, point 9): one checkpoint file written per epoch, and last.ckpt always the
newest epoch, also after an epoch that did not improve val/acc and in a resumed run."""
from __future__ import annotations

import json
import os
import re

import lightning as L
import torch
import torch.nn.functional as F

from src.lit.checkpoint import LatestCheckpoint
from tests.conftest import QUICK, compose_cfg
from train import train


class Scripted(L.LightningModule):
    """val/acc follows a script, so which epochs improve is known."""

    def __init__(self, val_acc):
        super().__init__()
        self.layer, self.val_acc = torch.nn.Linear(4, 2), val_acc

    def training_step(self, batch, i):
        return F.cross_entropy(self.layer(torch.randn(2, 4)), torch.tensor([0, 1]))

    def validation_step(self, batch, i):
        self.log("val/acc", self.val_acc[self.current_epoch], batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return [0]

    def val_dataloader(self):
        return [0]


def _final_name(filepath) -> str:
    """The file a save ends in: checkpoints are written to <name>.tmp<pid> and renamed into place."""
    return re.sub(r"\.tmp\d+$", "", os.path.basename(filepath))


def _fit(dirpath, val_acc, epochs, resume=None):
    ckpt = LatestCheckpoint(dirpath=dirpath, filename="epoch_{epoch:03d}", monitor="val/acc", mode="max",
                            auto_insert_metric_name=False)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, callbacks=[ckpt],
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    writes = []
    save = trainer.save_checkpoint

    def counted(filepath, *a, **k):
        writes.append((trainer.current_epoch, _final_name(filepath)))
        save(filepath, *a, **k)

    trainer.save_checkpoint = counted
    trainer.fit(Scripted(val_acc), ckpt_path=resume)
    return writes


def _epoch(path):
    return torch.load(path, weights_only=True)["epoch"]


def test_one_write_per_epoch_and_last_is_the_newest_epoch(tmp_path):
    acc = [0.5, 0.9, 0.7, 0.8, 0.95, 0.6]  # improves on epochs 0, 1, 4
    writes = _fit(tmp_path, acc, epochs=3)
    # Lightning's save_last=True: 2 writes on epochs 0 and 1, none on epoch 2 (last.ckpt stays at 1)
    assert [e for e, _ in writes] == [0, 1, 2]
    assert writes[-1] == (2, "last.ckpt")  # not improved: last.ckpt is a file of its own
    last = tmp_path / "last.ckpt"
    assert not last.is_symlink() and _epoch(last) == 2 and _epoch(tmp_path / "epoch_001.ckpt") == 1

    # resumed: its first epoch does not improve (0.8 < 0.9), the next does, the last does not
    writes = _fit(tmp_path, acc, epochs=6, resume=str(last))
    assert [e for e, _ in writes] == [3, 4, 5]
    assert _epoch(last) == 5 and _epoch(tmp_path / "epoch_004.ckpt") == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_004.ckpt", "last.ckpt"]


def test_an_improving_epoch_links_last_to_its_file(tmp_path):
    writes = _fit(tmp_path, [0.5, 0.9], epochs=2)
    assert writes == [(0, "epoch_000.ckpt"), (1, "epoch_001.ckpt")]
    last = tmp_path / "last.ckpt"
    assert last.is_symlink() and os.readlink(last) == "epoch_001.ckpt" and _epoch(last) == 1


def test_last_never_dangles_when_the_best_file_it_links_to_is_replaced(tmp_path, monkeypatch):
    """Epoch 1 improves: epoch_000.ckpt, which last.ckpt links to, is deleted only after the relink."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    removed = []
    remove = SingleDeviceStrategy.remove_checkpoint

    def checked(self, filepath):
        last = tmp_path / "last.ckpt"
        removed.append((os.path.basename(filepath), last.resolve().name))
        assert last.resolve() != (tmp_path / os.path.basename(filepath)).resolve()
        remove(self, filepath)

    monkeypatch.setattr(SingleDeviceStrategy, "remove_checkpoint", checked)
    _fit(tmp_path, [0.5, 0.9], epochs=2)
    assert removed == [("epoch_000.ckpt", "epoch_001.ckpt")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_001.ckpt", "last.ckpt"]


def test_default_config_writes_one_checkpoint_per_epoch(fake_data, tmp_path, monkeypatch):
    """The real callbacks group: 2 epochs, 2 files written, last.ckpt = epoch 1 whichever improved."""
    written = []
    save = L.Trainer.save_checkpoint

    def counted(self, filepath, *a, **k):
        written.append(_final_name(filepath))
        return save(self, filepath, *a, **k)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", counted)
    cfg = compose_cfg(["model=lenet5", "data=mnist", *QUICK, "trainer.max_epochs=2"], tmp_path, fake_data)
    train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"
    assert len(written) == 2, written
    assert _epoch(tmp_path / "checkpoints" / "last.ckpt") == 1


def test_a_full_disk_leaves_no_truncated_checkpoint_or_temp_file_and_names_the_run_folder(tmp_path, monkeypatch):
    """Issue 23.7: a full disk mid-run left a truncated checkpoint and metrics.tmp<pid>, and the
    message named a temporary file."""
    import errno
    import json
    from pathlib import Path
    from types import SimpleNamespace

    import pytest

    from src.lit.checkpoint import LatestCheckpoint
    from src.results import write_json

    target = tmp_path / "checkpoints" / "epoch_001.ckpt"
    target.parent.mkdir()
    target.write_bytes(b"the previous, whole checkpoint")

    def full_disk(path, weights_only=False):
        Path(path).write_bytes(b"half a checkpo")  # what a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    trainer = SimpleNamespace(save_checkpoint=full_disk, is_global_zero=True, global_step=7, loggers=[])
    with pytest.raises(OSError) as e:
        LatestCheckpoint(dirpath=str(target.parent))._save_checkpoint(trainer, str(target))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert target.read_bytes() == b"the previous, whole checkpoint" and sorted(p.name for p in target.parent.iterdir()) == [target.name]

    def no_space(self, *a, **k):
        Path.write_bytes(self, b"{")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(OSError) as e:
        write_json(tmp_path / "metrics.json", {"status": "completed"})
    assert e.value.filename == str(tmp_path / "metrics.json")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("metrics")] == []
    monkeypatch.undo()
    write_json(tmp_path / "metrics.json", {"status": "completed"})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"status": "completed"}
