"""One run on many GPUs or machines (DDP): rank-aware launching, batch sizes and guards."""
