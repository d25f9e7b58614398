"""Apply a TilePlan: the fused kernel when it is built, the pure-PyTorch reference otherwise."""

import torch

from ..negatives.plan import FLAG_BAD_PLAN
from .tile_kernel import apply_plan_kernel, unsupported_reason
from .tile_ref import apply_plan_reference

IMPLS = ("auto", "reference", "kernel")


def apply_plan(images, plan, impl="auto"):
    """Apply ``plan`` to ``images`` (``N, C, H, W`` float). Returns ``(out, flags)``.

    ``impl``: ``"auto"`` (kernel if available), ``"reference"`` or ``"kernel"`` (raises when
    the kernel is unavailable).
    """
    if impl not in IMPLS:
        raise ValueError("apply_plan: impl=%r is not known; use one of: %s" % (impl, ", ".join(IMPLS)))
    if images.dim() != 4:
        raise ValueError("apply_plan: images must be N, C, H, W; got shape %s" % (tuple(images.shape),))
    on_cpu = images.is_cpu  # attribute reads: this runs on every apply (device objects cost more)
    if not (on_cpu and plan.grid.is_cpu) and plan.grid.device != images.device:
        plan = plan.to(images.device)
    reason = None if impl == "reference" else unsupported_reason(images)
    if reason is None and images.requires_grad and torch.is_grad_enabled():
        reason = "the tile kernel has no backward; the reference is differentiable"
    if impl == "kernel" and reason is not None:
        raise RuntimeError("apply_plan(impl='kernel'): %s; use impl='auto' to fall back to the reference" % reason)
    if reason is None and on_cpu:
        # The CPU kernel validates the plan itself, with TilePlan.check's conditions and messages
        # (ValueError): on small batches the Python check alone costs more than the kernel.
        return apply_plan_kernel(images, plan)
    if reason is None and images.numel():
        # The CUDA kernel validates the plan as it goes (FLAG_BAD_PLAN): one read of the flags
        # replaces TilePlan.check's ten or so host syncs on device tensors.
        out, flags = apply_plan_kernel(images, plan)
        if int(flags.max()) >= FLAG_BAD_PLAN:
            plan.check(images)  # raises with the message naming what is wrong
            raise ValueError("plan does not fit the images (flagged by the CUDA tile kernel)")
        return out, flags
    plan.check(images)
    if reason is None:
        return apply_plan_kernel(images, plan)
    return apply_plan_reference(images, plan)
