"""Data parallelism across processes (``accelerate launch`` or ``torchrun``), CPU (gloo) or GPU (nccl).

Each process holds the whole policy and owns a contiguous share of the step's prompts: it
samples, verifies, critiques and refines its own groups, so group advantages never cross
processes. The loss of each process is normalised by counts summed over all processes, and
gradients are summed before the optimizer step, so the update equals the one a single process
makes on the same global batch, whatever the number of processes.

Single-process runs use the same object with ``world_size == 1``; every collective is then a no-op.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# Metrics that count things: summed over processes; timings take the slowest process;
# every other metric is a mean over equally sized shares, so it is averaged.
SUMMED_PREFIXES = ("refine/triggered_groups", "refine/critiques", "refine/groups_rescued", "refine/added",
                   "refine/too_long", "critic/", "rollout/requests", "rollout/retries", "rollout/samples",
                   "rollout/ids_")
MAX_PREFIXES = ("time/",)


def is_main_process() -> bool:
    """True in a single process and in the first of several; usable before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


class Distributed:
    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> tuple[list[T], int]:
        """This process's contiguous share of ``items`` and the index of its first item.

        >>> Distributed().shard([1, 2, 3, 4])
        ([1, 2, 3, 4], 0)
        """
        if len(items) % self.world_size:
            raise ValueError(f"{len(items)} items cannot be split evenly over {self.world_size} processes")
        size = len(items) // self.world_size
        return list(items[self.rank * size:(self.rank + 1) * size]), self.rank * size

    def sum(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def sum_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Sum each metric over processes; a process without a metric (no micro-batch of its own
        in a mini-batch) adds 0."""
        if not self.enabled:
            return metrics
        keys = self._all_keys(metrics)
        values = torch.tensor([float(metrics.get(k, 0.0)) for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return dict(zip(keys, values.tolist()))

    def _all_keys(self, metrics: dict) -> list[str]:
        gathered: list[list[str]] = [[] for _ in range(self.world_size)]
        dist.all_gather_object(gathered, sorted(metrics))
        return sorted({k for part in gathered for k in part})

    def union(self, values: Iterable[int]) -> list[int]:
        """Sorted union of every process's ``values``."""
        local = sorted(set(values))
        if not self.enabled:
            return local
        gathered: list[list[int]] = [[] for _ in range(self.world_size)]
        dist.all_gather_object(gathered, local)
        return sorted({v for part in gathered for v in part})

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Sum gradients over processes (each process's loss already carries the global normalisation)."""
        if not self.enabled:
            return
        for p in parameters:
            if p.requires_grad:
                if p.grad is None:      # a process whose micro-batches never reached this parameter
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)

    def combine_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Per-process step metrics -> the global ones: counts summed, times maxed, the rest averaged
        over the processes that have a finite value (a slice absent from one process's share)."""
        if not self.enabled:
            return metrics
        keys = self._all_keys(metrics)
        values = torch.tensor([float(metrics.get(k, float("nan"))) for k in keys], dtype=torch.float64)
        present = torch.isfinite(values)
        count = present.double()
        summed = torch.where(present, values, 0.0)
        maxed = torch.where(present, values, -torch.inf)
        for t in (count, summed):
            dist.all_reduce(t)
        dist.all_reduce(maxed, op=dist.ReduceOp.MAX)
        out = {}
        for i, k in enumerate(keys):
            if not count[i]:
                out[k] = float("nan")
            elif k.startswith(SUMMED_PREFIXES):
                out[k] = float(summed[i])
            elif k.startswith(MAX_PREFIXES):
                out[k] = float(maxed[i])
            else:
                out[k] = float(summed[i] / count[i])
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()
