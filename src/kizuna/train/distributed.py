"""Distributed helpers for `torchrun`: process-group set-up, differentiable gathers and exchanges,
and the distributed forms of the CLIP and SigLIP losses.

CLIP: every rank gathers all features *with gradient* and scores its own n rows against the N
columns (the local-loss form, memory n x N instead of N x N). SigLIP: text chunks travel round the
ring of ranks one neighbour at a time, so no rank ever holds every text feature at once.
With DDP averaging gradients over ranks, both equal one process on the concatenated batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kizuna.models.losses import clip_loss, siglip_loss


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether torchrun started this process as one of several: RANK set and WORLD_SIZE above 1 (an empty
    WORLD_SIZE is one process)."""
    return "RANK" in os.environ and os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1")


def first_rank() -> bool:
    """Whether this process is rank 0, or the only one: also before the process group is set up (--print-config
    under torchrun printed one JSON document per rank)."""
    return not launched_by_torchrun() or os.environ.get("RANK", "0").strip() in ("", "0")


def init_distributed(device: str | None = None) -> DistInfo:
    """Read torchrun's environment; NCCL on GPU, gloo on CPU. A plain `python` run is world size 1."""
    import re

    # the whole name (a prefix let "cpux" or "cudas" through, run on the CPU or the first GPU)
    if device not in (None, "auto") and not re.fullmatch(r"(cpu|cuda)(:\d+)?", str(device)):
        raise ValueError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    want_cuda = torch.cuda.is_available() if device in (None, "auto") else str(device).startswith("cuda")
    if want_cuda and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU here (torch {torch.__version__}); use --device cpu or auto")
    if not launched_by_torchrun():
        dev = torch.device(str(device) if want_cuda and device not in (None, "auto") else
                           "cuda" if want_cuda else "cpu")
        if dev.type == "cuda" and dev.index is not None:  # --device cuda:1 ran on GPU 0 (the index was dropped)
            if dev.index >= torch.cuda.device_count():
                raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
            torch.cuda.set_device(dev)  # so that what is made on "cuda" lands there too
        return DistInfo(device=dev)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' tensors concatenated; the backward sums gradients and returns each rank its slice."""
    import warnings

    import torch.distributed.nn.functional as dnn

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public one
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(dnn.all_gather(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


class _NeighbourExchange(torch.autograd.Function):
    """Send ``x`` to rank+1 and receive from rank-1 (mod world); gradients flow back the other way."""

    @staticmethod
    def forward(ctx, x, to_rank: int, from_rank: int):
        ctx.to_rank, ctx.from_rank = to_rank, from_rank
        recv = torch.empty_like(x)
        send = dist.isend(x.contiguous(), to_rank)
        dist.recv(recv, from_rank)
        send.wait()
        return recv

    @staticmethod
    def backward(ctx, grad):
        return _NeighbourExchange.apply(grad.contiguous(), ctx.from_rank, ctx.to_rank), None, None


def neighbour_exchange(x: torch.Tensor) -> torch.Tensor:
    rank, world = dist.get_rank(), dist.get_world_size()
    return _NeighbourExchange.apply(x, (rank + 1) % world, (rank - 1) % world)


def distributed_clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return clip_loss(img, txt, scale)
    all_img, all_txt = gather_with_grad(img), gather_with_grad(txt)
    return clip_loss(img, txt, scale, all_img, all_txt, offset=dist.get_rank() * img.shape[0])


def distributed_siglip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    loss = siglip_loss(img, txt, scale, bias)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return loss
    chunk = txt
    for _ in range(dist.get_world_size() - 1):
        chunk = neighbour_exchange(chunk)
        loss = loss + siglip_loss(img, chunk, scale, bias, negatives_only=True)
    return loss


def contrastive_loss(kind: str, img, txt, scale, bias=None) -> torch.Tensor:
    if kind == "siglip":
        return distributed_siglip_loss(img, txt, scale, bias)
    return distributed_clip_loss(img, txt, scale)


def even_batch(batch: dict, skips: list, device: torch.device) -> dict:
    """Trim this rank's batch to the smallest batch of any rank. Samples that fail to load shrink one
    rank's batch and not the others': the CLIP loss's all_gather needs equal shapes, and a rank left with
    an empty batch would skip a step whose collectives the other ranks then wait on for ever. Trimmed,
    every rank takes a step of the same size, or all skip it together. The samples dropped to match are
    counted as ``rank_balance`` in each of ``skips`` (SkipCounters). One process: ``batch`` as it is."""
    from kizuna.data.loader import trim_batch

    n = len(batch["labels"])
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return batch
    smallest = torch.tensor([n], device=device)
    dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
    keep = int(smallest.item())
    if keep == n:
        return batch
    for counter in skips:
        counter.add("rank_balance", n=n - keep)
    return trim_batch(batch, keep)


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish_distributed() -> None:
    """The end of a command under torchrun: every rank waits for the others (rank 0 may still be writing
    results), then the process group is taken down. Left to the interpreter's exit, one rank's gloo could
    abort mid-teardown ("terminate called without an active exception") and fail a finished run."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def from_rank0(make):
    """``make()`` on rank 0, its (picklable) result on every rank: work whose result must be the same
    everywhere, such as a trained tokenizer (two ranks' token ids must mean the same text)."""
    if not (dist.is_available() and dist.is_initialized()):
        return make()
    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool, device: torch.device | None) -> bool:
    """Whether ``flag`` holds on any rank (one all_reduce); one process decides alone, without a device tensor
    (whose read-back stalls a GPU's queue every step)."""
    if device is None or not (dist.is_available() and dist.is_initialized()):
        return flag
    x = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return bool(x.item() > 0)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


def raise_together(error: BaseException | None, device: torch.device, what: str, where: str = "") -> None:
    """Every rank raises when any rank's ``error`` is set: each rank's checks first, then one all_reduce of the
    ranks' refusals. A check that failed on one rank only (its node's copy of the data differs) raised there
    while the others went on into their first collective, and died there ("Connection closed by peer" under
    gloo; under NCCL a wait until the timeout) after rank 0 had already rewritten the run's log. The rank that
    refused raises its own error; the others a ValueError saying which rank(s) refused ``what`` (e.g. "the
    resume"), after ``where`` (e.g. "--resume PATH: "). Every rank must call it, at the same point."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        if error is not None:
            raise error
        return
    refused = torch.zeros(dist.get_world_size(), device=device)
    refused[dist.get_rank()] = 0.0 if error is None else 1.0
    all_reduce_sum(refused)
    if error is not None:
        raise error
    ranks = [r for r, flag in enumerate(refused.tolist()) if flag]
    if ranks:
        who = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"
        raise ValueError(f"{where}{who} refused {what}: see {'its message' if len(ranks) == 1 else 'their messages'}")
