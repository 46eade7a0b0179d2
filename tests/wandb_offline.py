"""Read a W&B offline run file (run-<id>.wandb) without the network: wandb >= 0.20 no longer ships
a Python reader (its sync moved to the Go core), so this decodes the format -- LevelDB's log
framing (32 KiB blocks, records split FULL/FIRST/MIDDLE/LAST behind a 7-byte crc/length/type
header) after W&B's 7-byte file header, each record one wandb_internal_pb2.Record."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    i, parts = HEADER, b""
    while i + HEADER <= len(data):
        if BLOCK - i % BLOCK < HEADER:  # a block's tail too short for a header is padding
            i += BLOCK - i % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[i:i + HEADER])
        i += HEADER
        if kind == 0 and length == 0:
            break
        chunk, i = data[i:i + length], i + length
        parts = chunk if kind in (FULL, FIRST) else parts + chunk
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(parts)
            yield rec


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    exit_code: int | None = None


def read_run(run_dir: Path) -> OfflineRun:
    """Fold one offline run's records into what the W&B UI would show after `wandb sync`."""
    (path,) = run_dir.glob("run-*.wandb")
    out = OfflineRun()
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.name, out.group, out.job_type, out.project = r.display_name, r.run_group, r.job_type, r.project
            out.tags = list(r.tags)
            out.config.update({c.key: json.loads(c.value_json) for c in r.config.update})
        elif kind == "config":
            out.config.update({c.key: json.loads(c.value_json) for c in rec.config.update})
        elif kind == "summary":
            out.summary.update({_key(u): json.loads(u.value_json) for u in rec.summary.update})
            for r in rec.summary.remove:
                out.summary.pop(_key(r), None)
        elif kind == "history":
            out.history.append({_key(h): json.loads(h.value_json) for h in rec.history.item})
        elif kind == "exit":
            out.exit_code = rec.exit.exit_code
    return out
