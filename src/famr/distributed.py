"""Data parallelism under ``torchrun`` (PyTorch distributed; NCCL on GPUs, gloo on CPUs).

The library never starts processes or process groups: the caller (the CLI, under ``torchrun``)
initialises ``torch.distributed``; these helpers only read its state. When no process group is
initialised every helper is the identity and famr runs in one process.

How a step is split. Every rank builds the same global batch (the same seeded shuffles and
augmentations), takes its strided share ``batch[rank::world]``, and back-propagates its mean
loss scaled by its share of the driving stream's batch; the gradients are summed over ranks.
The sum equals the gradient of the one-process mean loss exactly whenever every stream's batch
splits evenly (the default batch sizes over 2, 4 or 8 ranks), and always for single-stream
objectives (FAMR, gradient ascent, fine-tuning, uniform-KL, ...); for multi-stream objectives
(NegGrad+, ``famr_retain``, SCRUB) an uneven last batch is weighted by the driving stream's
share. Parameter terms (the l2 anchor, an l1 penalty) are added identically on every rank.
Methods that draw random labels per batch (``random_label``, ``salun``) draw them per rank:
reproducible, but not the same numbers as one process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files and prints)."""
    return world()[0] == 0


def shard(tensor: Tensor) -> Tensor:
    """This rank's strided share of ``tensor``'s first dimension."""
    rank, size = world()
    return tensor if size == 1 else tensor[rank::size]


def all_reduce_sum_(tensors: Sequence[Tensor]) -> None:
    """Sum ``tensors`` over ranks in place, as one flat buffer (one collective call)."""
    rank, size = world()
    if size == 1 or not tensors:
        return
    import torch.distributed as dist

    dtypes = {t.dtype for t in tensors}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float64
    flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def gather_rows(fn: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    """``fn(inputs)`` computed data-parallel: each rank applies ``fn`` to its strided share
    and the results are gathered, in the original row order, on every rank."""
    rank, size = world()
    if size == 1 or len(inputs) < size:  # too few rows to share: every rank computes them all
        return fn(inputs)
    import torch.distributed as dist

    local = fn(inputs[rank::size])
    home = local.device
    if dist.get_backend() == "nccl" and home.type == "cpu":  # NCCL gathers GPU tensors only
        local = local.to(torch.device("cuda", torch.cuda.current_device()))
    counts = [len(range(r, len(inputs), size)) for r in range(size)]
    longest = max(counts)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    out = local.new_empty((len(inputs), *local.shape[1:]), device=home)
    for r in range(size):
        out[r::size] = parts[r][: counts[r]].to(home)
    return out


def broadcast_object(value):
    """``value`` from rank 0 on every rank (e.g. a decision only rank 0 can make)."""
    rank, size = world()
    if size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
