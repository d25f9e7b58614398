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
    if reason is None:
        # The kernels check the plan's contents as they go and report a bad plan through
        # FLAG_BAD_PLAN rather than a C++ exception (see tile_cpu.cpp: on one GPU machine any
        # exception thrown from the library crashed the process); its layout is checked here.
        # One read of the flags replaces TilePlan.check's dozen tensor ops (host syncs on a GPU).
        layout = _layout_error(plan, images.shape[0])
        if layout is not None:
            raise ValueError(layout)
        if images.numel() == 0:
            plan.check(images)  # an empty batch launches no CUDA kernel to check it
        out, flags = apply_plan_kernel(images, plan)
        if flags.numel() and int(flags.max()) >= FLAG_BAD_PLAN:
            plan.check(images)  # raises with the message naming what is wrong
            raise ValueError("plan does not fit the images (flagged by the tile kernel)")
        return out, flags
    plan.check(images)
    return apply_plan_reference(images, plan)


_PLAN_COLUMNS = (("grid", 2, (2,), torch.int64), ("tiles", 3, None, torch.int64), ("box", 2, (6,), torch.int64),
                 ("blend_src", 1, (), torch.int64), ("blend_w", 1, (), torch.float32))


def _layout_error(plan, n):
    """Why the plan's tensors cannot describe a batch of ``n`` images (None when they can):
    shapes and dtypes only, a few attribute reads."""
    if plan.grid.dim() != 2 or plan.grid.shape[0] != n:
        return "plan is for a batch of %d images but got %d" % (plan.grid.shape[0] if plan.grid.dim() else 0, n)
    for name, dims, tail, dtype in _PLAN_COLUMNS:
        t = getattr(plan, name)
        if t.dtype != dtype:
            return "plan tensor %s must be %s, got %s" % (name, dtype, t.dtype)
        if t.dim() != dims or t.shape[0] != n or (tail is not None and tuple(t.shape[1:]) != tail):
            return "plan tensors have the wrong shapes for a batch of %d images (%s: %s)" % (n, name, tuple(t.shape))
    if plan.tiles.shape[1] < 1 or plan.tiles.shape[2] != 3:
        return "plan tensors have the wrong shapes for a batch of %d images (tiles: %s)" % (n, tuple(plan.tiles.shape))
    return None
