"""How many members of a pack fit on its GPU, estimated from one member.

The launcher sizes packs before any job has seen a GPU (src/sweeps/packing.py: ``auto`` is at most
16 seeds). Inside the job, on a CUDA device, one member's training step is measured once: its peak
memory over a forward and backward pass at the run's batch size, plus its weights, gradients and
two optimizer states (Adam's; SGD with momentum needs one). A pack needs about K times that, since
every stacked tensor is K members' tensors side by side. When K members would take more than
``RESERVE`` of the GPU's free memory, the pack trains in chunks that fit, one after another, and
says so in one line. On a CPU nothing is measured: memory there is the machine's, and packs run
as asked.
"""
from __future__ import annotations

import sys

import torch

RESERVE = 0.8  # of the free memory: cuDNN workspaces, CUDA graphs and the data take the rest


def members_that_fit(per_member_bytes: int, free_bytes: int, wanted: int) -> int:
    """At most ``wanted`` members, at least 1 (a member that does not fit alone fails as its
    standalone run would)."""
    if per_member_bytes <= 0:
        return wanted
    return max(1, min(wanted, int(free_bytes * RESERVE // per_member_bytes)))


def member_bytes(model: torch.nn.Module, batch_shape: tuple[int, ...], device: torch.device,
                 bf16: bool = False) -> int:
    """One member's training-step memory on ``device`` (CUDA): activations measured (under bf16
    autocast when the run uses it), weights, gradients and optimizer states counted."""
    model = model.to(device).train()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x = torch.randn(batch_shape, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss = model(x).float().sum()
    loss.backward()
    torch.cuda.synchronize(device)
    activations = torch.cuda.max_memory_allocated(device) - base
    model.zero_grad(set_to_none=True)
    del x
    return int(activations + 3 * weights)  # + gradients and two optimizer states (the weights are in base)


def chunk_sizes(total: int, fit: int) -> list[int]:
    """``total`` members in chunks of at most ``fit``, as even as possible (7 by 3 -> 3, 2, 2)."""
    chunks = -(-total // fit)
    return [total // chunks + (i < total % chunks) for i in range(chunks)]


def plan_chunks(cfg, count: int) -> list[int]:
    """The chunk sizes a pack of ``count`` members trains in on this job's device."""
    if count <= 1 or not torch.cuda.is_available() or str(cfg.trainer.get("accelerator")) == "cpu":
        return [count] if count else []
    from hydra.utils import instantiate

    device = torch.device("cuda", torch.cuda.current_device())
    shape = (int(cfg.data.batch_size), int(cfg.data.channels), int(cfg.data.image_size), int(cfg.data.image_size))
    bf16 = str(cfg.trainer.get("precision", "")).startswith("bf16")
    per_member = member_bytes(instantiate(cfg.model), shape, device, bf16)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    fit = members_that_fit(per_member, free, count)
    if fit < count:
        sizes = chunk_sizes(count, fit)
        print(f"[pack] {count} members need ~{count * per_member / 2**30:.1f} GiB, {free / 2**30:.1f} GiB is free: "
              f"training them in chunks of {', '.join(map(str, sizes))}", file=sys.stderr)
        return sizes
    return [count]
