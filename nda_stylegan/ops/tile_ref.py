"""Pure-PyTorch reference for applying a TilePlan (see ``nda_stylegan.negatives.plan``).

Batched index arithmetic and one gather: no loop over images. The C++ and CUDA kernels are
tested against this function, value for value.
"""

import torch

from ..negatives.plan import (BOX_FILL, BOX_NONE, BOX_PASTE, FLAG_CHANGED, FLAG_NONFINITE, TILE_ROT, TILE_SRC_IMAGE,
                              TILE_SRC_TILE)


def _opmath(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def source_coords(plan, height, width):
    """Source image, row and column of every output pixel: three int64 ``[N, H, W]`` tensors."""
    device = plan.grid.device
    n = plan.batch
    gh = plan.grid_rows.view(n, 1, 1)
    gw = plan.grid_cols.view(n, 1, 1)
    th = height // gh
    tw = width // gw
    y = torch.arange(height, device=device).view(1, height, 1)
    x = torch.arange(width, device=device).view(1, 1, width)
    ti = torch.minimum(y // th, gh - 1)
    tj = torch.minimum(x // tw, gw - 1)
    ly = y - ti * th
    lx = x - tj * tw
    # Size of the output tile this pixel lies in (the last row/column absorbs the remainder).
    size_y = torch.where(ti == gh - 1, height - (gh - 1) * th, th)
    size_x = torch.where(tj == gw - 1, width - (gw - 1) * tw, tw)
    t = ti * gw + tj  # [N, H, W]
    entry = torch.gather(plan.tiles, 1, t.reshape(n, -1, 1).expand(-1, -1, 3)).view(n, height, width, 3)
    src_img, src_tile, rot = entry[..., TILE_SRC_IMAGE], entry[..., TILE_SRC_TILE], entry[..., TILE_ROT]
    si = src_tile // gw
    sj = src_tile % gw
    # Quarter turns counter-clockwise, as torch.rot90(dims=(-2, -1)).
    sy = torch.where(rot == 0, ly, torch.where(rot == 1, lx, torch.where(rot == 2, size_y - 1 - ly, size_x - 1 - lx)))
    sx = torch.where(rot == 0, lx, torch.where(rot == 1, size_y - 1 - ly, torch.where(rot == 2, size_x - 1 - lx, ly)))
    src_y = (si * th + sy).clamp(0, height - 1)
    src_x = (sj * tw + sx).clamp(0, width - 1)
    return src_img, src_y, src_x


def apply_plan_reference(images, plan):
    """Apply ``plan`` to ``images`` (``N, C, H, W`` float). Returns ``(out, flags)``."""
    n, c, h, w = images.shape
    src_img, src_y, src_x = source_coords(plan, h, w)
    nhwc = images.permute(0, 2, 3, 1)
    out = nhwc[src_img, src_y, src_x]  # [N, H, W, C]

    opmath = _opmath(images.dtype)
    blend_w = plan.blend_w.to(opmath)
    blending = blend_w != 1
    if bool(blending.any()):
        wgt = blend_w.view(n, 1, 1, 1)
        other = nhwc[plan.blend_src]
        mixed = (wgt * out.to(opmath) + (1 - wgt) * other.to(opmath)).to(images.dtype)
        out = torch.where(blending.view(n, 1, 1, 1), mixed, out)

    mode = plan.box_mode
    if bool((mode != BOX_NONE).any()):
        y = torch.arange(h, device=images.device).view(1, h, 1)
        x = torch.arange(w, device=images.device).view(1, 1, w)
        y0, y1, x0, x1 = (b.view(n, 1, 1) for b in plan.box_bounds.unbind(1))
        inside = (y >= y0) & (y < y1) & (x >= x0) & (x < x1)  # [N, H, W]
        area = inside.sum((1, 2)).clamp(min=1).to(opmath)
        # masked_fill, not a product with the mask: NaN/inf outside the box must not leak into its mean.
        box_sum = nhwc.to(opmath).masked_fill(~inside.unsqueeze(-1), 0).sum((1, 2))  # [N, C]
        fill = (box_sum / area.view(n, 1)).to(images.dtype).view(n, 1, 1, c)
        paste = nhwc[plan.box_src]
        fill_here = (inside & (mode == BOX_FILL).view(n, 1, 1)).unsqueeze(-1)
        paste_here = (inside & (mode == BOX_PASTE).view(n, 1, 1)).unsqueeze(-1)
        out = torch.where(fill_here, fill.expand_as(out), out)
        out = torch.where(paste_here, paste, out)

    out = out.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)
    changed = (out != images).flatten(1).any(1)
    nonfinite = ~torch.isfinite(out).flatten(1).all(1)
    flags = changed.to(torch.int32) * FLAG_CHANGED + nonfinite.to(torch.int32) * FLAG_NONFINITE
    return out, flags
