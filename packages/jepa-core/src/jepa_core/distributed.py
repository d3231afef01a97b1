"""Process-group setup for runs started by ``torchrun`` (env:// rendezvous), or none."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from jepa_core.target import EMATarget


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False
    created: bool = False  # this call created the process group (and should destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def init_distributed(device: torch.device, timeout_s: float | None = None) -> DistInfo:
    """Initialise the default process group when started by ``torchrun`` (also with one process).

    ``timeout_s`` (``train.dist_timeout_s``): how long a collective waits for the other ranks
    before it fails, instead of hanging when a peer is stopped or stuck; None: PyTorch's default.

    Unlike the official code, which silently falls back to world size 1 without a process
    group and then crashes in DDP (ijepa issue #43), this either initialises a group or
    runs without DDP at all.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)
    if not launched_by_torchrun():
        return DistInfo()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if timeout_s is None:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]), True, True)


def shutdown_distributed(info: DistInfo) -> None:
    """After a successful run, on every rank: destroy the process group that
    :func:`init_distributed` created (``info.created``), once all ranks got here.

    Exiting with a live gloo group can abort a process at interpreter shutdown ("terminate
    called without an active exception", pytorch/pytorch#179291), which torchrun reports as a
    failure. Drop the DDP wrapper and sharded modules first, so the collection frees them. Not
    for error paths: the barrier would wait for ranks that are elsewhere.
    """
    if info.created and dist.is_available() and dist.is_initialized():
        import gc

        dist.barrier()  # no rank still has collectives in flight
        gc.collect()  # drop unreachable DDP reducers and meshes that hold the group
        dist.destroy_process_group()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device={name!r} but CUDA is not available; use train.device=cpu or auto")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.initialized and info.world_size > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.initialized and info.world_size > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier(info: DistInfo) -> None:
    if info.initialized and info.world_size > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.initialized and info.world_size > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_module_state(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers of ``module`` to every rank (once, at setup)."""
    if info.initialized and info.world_size > 1:
        with torch.no_grad():
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    """``none`` without a process group; ``ddp`` or ``fsdp`` under torchrun (``auto`` = ddp)."""
    if strategy not in ("auto", "ddp", "fsdp"):
        raise ValueError(f"train.strategy must be one of auto, ddp, fsdp; got {strategy!r}")
    if not info.initialized:
        return "none"
    return "ddp" if strategy == "auto" else strategy


class TrainableStep(torch.nn.Module):
    """What DDP wraps: the method's trainable modules, registered so that DDP sees (and
    all-reduces the gradients of) exactly their parameters, and a call of the method's own
    training step. The method is held outside the module tree, so its target modules (the EMA
    target encoder) are not part of DDP: they get no gradient hooks; the Trainer broadcasts
    them once at setup (:func:`broadcast_module_state`)."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.trainable = torch.nn.ModuleDict(method.trainable_modules())
        self._method = (method,)

    def forward(self, batch):
        return self._method[0](batch)


def _block_lists(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The items of every ``nn.ModuleList`` inside ``module`` (the transformer blocks)."""
    out: list[torch.nn.Module] = []
    for sub in module.modules():
        if isinstance(sub, torch.nn.ModuleList):
            out += [m for m in sub if any(True for _ in m.parameters())]
    return out


def fully_shard_method(method: torch.nn.Module, device: torch.device, info: DistInfo) -> list:
    """Shard a method with FSDP2 (``torch.distributed.fsdp.fully_shard``) over all ranks.

    Each transformer block, then each module of ``method.trainable_modules()`` and of
    ``method.target_modules()``, is a ``fully_shard`` unit. An
    :class:`~jepa_core.target.EMATarget` is sharded through its inner module, the same way as the
    encoder it follows, so that target and online parameters have the same local shards and the
    EMA update runs on them without communication. Methods named ``forward_*`` (e.g.
    ``forward_multi``) are registered with ``register_fsdp_forward_method`` so that calling them
    gathers the parameters like ``forward`` does. Returns the trainable modules (the roots whose
    gradient sync the Trainer controls).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (info.world_size,))
    trainable = list(method.trainable_modules().values())
    targets = [t.module if isinstance(t, EMATarget) else t for t in method.target_modules().values()]
    for module in [*trainable, *targets]:
        for block in reversed(_block_lists(module)):  # inner units first
            fully_shard(block, mesh=mesh)
        fully_shard(module, mesh=mesh)
        for name in dir(type(module)):
            if name.startswith("forward_") and callable(getattr(type(module), name)):
                register_fsdp_forward_method(module, name)
    return trainable
