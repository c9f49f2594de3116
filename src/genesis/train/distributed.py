"""Multi-process (DDP) plumbing: the torchrun launch, the process group, global batch norm.

``genesis pretrain --gpus N`` with N > 1 re-executes itself under
``torchrun --standalone --nproc_per_node N``; each process then leases its own GPU
(``genesis.train.devices``) and joins a process group (NCCL on CUDA, gloo on CPU).

Batch semantics do not depend on the number of processes. The configured ``batch_size`` is
the *global* batch, split evenly across processes (it must be divisible by their number).
DDP averages gradients over processes, which equals the gradient of the global-batch mean
loss. Batch norm is synchronised (``sync_batchnorm``, on by default): statistics are taken
over the global batch, so one process with batch 6 and two with 3 each compute the same
normalisation. torch's ``SyncBatchNorm`` only runs on accelerators, so on the CPU (tests,
gloo) ``GlobalBatchNorm3d`` below does the same with autograd-aware all-reduces.
"""

from __future__ import annotations

import datetime
import logging

import torch
import torch.distributed as dist
from torch import Tensor, nn

# Re-exported: the launch helpers live in a torch-free module so the CLI can re-execute
# itself under torchrun before paying for ``import torch``.
from genesis.train.launch import (
    DistContext,
    context_from_env,
    launched_by_torchrun,
    torchrun_command,
)

__all__ = [
    "DistContext",
    "GlobalBatchNorm3d",
    "all_reduce_sum",
    "any_process",
    "barrier",
    "context_from_env",
    "convert_sync_batchnorm",
    "differentiable_all_reduce",
    "init_process_group",
    "launched_by_torchrun",
    "shutdown",
    "torchrun_command",
]

log = logging.getLogger(__name__)


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the process group: NCCL for CUDA devices, gloo otherwise. No-op for 1 process."""
    if not ctx.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, timeout=datetime.timedelta(minutes=30))
    else:
        dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    log.info("rank %d of %d joined the process group on %s", ctx.rank, ctx.world_size, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext, device: torch.device) -> None:
    if ctx.enabled:
        if device.type == "cuda":
            dist.barrier(device_ids=[device.index])
        else:
            dist.barrier()


def all_reduce_sum(tensor: Tensor, ctx: DistContext) -> Tensor:
    """Sum ``tensor`` over processes in place (no-op for one process) and return it."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_process(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every process if ``flag`` is true on any: keeps stop decisions in step."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the gradients too.

    Every process's loss depends on the shared sum, so the gradient reaching each input is
    the sum over processes of the gradients with respect to that sum.
    """

    @staticmethod
    def forward(ctx: object, tensor: Tensor) -> Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def differentiable_all_reduce(tensor: Tensor) -> Tensor:
    """All-reduce (sum) that autograd can differentiate through."""
    return _AllReduceSum.apply(tensor)


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """Batch norm over the global batch of all processes, on any device (gloo included).

    Same parameters, buffers and state_dict keys as ``nn.BatchNorm3d``. In training with
    more than one process it all-reduces the per-channel sum and count, then the sum of
    squared deviations from the global mean (two passes, no cancellation), normalises with
    the biased global variance and updates the running statistics with the unbiased one,
    exactly as one process holding the whole batch would. The all-reduces are
    differentiable, so gradients flow through the shared statistics as they should.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x32 = x.float()
        count = torch.full((1,), x32.numel() / x32.shape[1], device=x.device)
        totals = differentiable_all_reduce(torch.cat([x32.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = x32 - mean.view(shape)
        var = differentiable_all_reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n.detach())
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: Tensor) -> None:
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative average, as nn.BatchNorm3d
            factor = 1.0 / float(self.num_batches_tracked.item())
        else:
            factor = self.momentum
        unbiased = var * (n / (n - 1).clamp(min=1))
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Swap every plain ``nn.BatchNorm3d`` for a synchronised one, keeping its state.

    CUDA: torch's fused ``SyncBatchNorm``. Other devices: ``GlobalBatchNorm3d``.
    Subclasses with their own behaviour (e.g. the release's batch-statistics norm) are
    refused rather than silently changed.
    """
    if device.type == "cuda":
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d) and type(module) is not nn.BatchNorm3d:
                raise TypeError(f"cannot synchronise {type(module).__name__}")
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_batchnorm(model)


def _swap_batchnorm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm3d) and not isinstance(module, GlobalBatchNorm3d):
        if type(module) is not nn.BatchNorm3d:
            raise TypeError(f"cannot synchronise {type(module).__name__}")
        synced = GlobalBatchNorm3d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        synced.load_state_dict(module.state_dict())
        synced.train(module.training)
        return synced.to(next(iter(module.state_dict().values())).device)
    for name, child in module.named_children():
        module.add_module(name, _swap_batchnorm(child))
    return module
