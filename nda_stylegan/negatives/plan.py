"""TilePlan: the one parameter format that every built-in negative samples into.

A plan says, for each image ``n`` of a batch, where each output pixel comes from. Applying it
is a single gather over memory (``nda_stylegan.ops.tile.apply_plan``), so a batch that mixes
jigsaw, stitch, mosaic, rotate, cutout, cutmix and mixup images is made by one kernel call.

Per image, three stages are applied in order:

1. **Tiles.** The image is cut into a ``gh x gw`` grid (``grid[n]``). Tiles are
   ``th = H // gh`` by ``tw = W // gw`` pixels; the last row/column of tiles absorbs the
   remainder when the size is not divisible. Output tile ``t = ti * gw + tj`` is filled from
   ``tiles[n, t] = (src_image, src_tile, rot)``: tile ``src_tile`` of image ``src_image``,
   turned by ``rot`` quarter turns counter-clockwise (the sense of ``torch.rot90``).
   Local coordinates use the *output* tile's size; every source coordinate is clamped into
   the image, so no plan can read out of bounds.
2. **Blend.** ``v = w * v + (1 - w) * images[blend_src[n], c, y, x]`` with ``w = blend_w[n]``
   (``w == 1`` leaves ``v`` alone), computed in float32 (float64 for double input).
3. **Box.** Inside ``box[n] = (y0, y1, x0, x1, mode, src)`` (half-open), ``mode`` 0 does
   nothing, 1 fills with the per-channel mean of ``images[n]`` over the box (cutout), 2 pastes
   ``images[src]`` at the same place (cutmix).

Applying also returns ``flags[n]``: bit 0 set when the output differs from ``images[n]``
anywhere (a negative equal to its source is not a negative), bit 1 set when the output holds
a non-finite value. (The kernels also set bit 2, FLAG_BAD_PLAN, when the plan breaks
:meth:`TilePlan.check`'s conditions: the CPU kernel on every image, the CUDA kernel on each image
whose plan is bad. ``apply_plan`` then raises, so the flags it returns never hold it.)
"""

import torch

BOX_NONE, BOX_FILL, BOX_PASTE = 0, 1, 2
FLAG_CHANGED, FLAG_NONFINITE, FLAG_BAD_PLAN = 1, 2, 4

# Column names of the plan's tensors (the kernels read this layout: change it nowhere but here
# and in ops/csrc). Python code reads and writes the columns through TilePlan's named views.
GRID_ROWS, GRID_COLS = 0, 1                          # grid[n] = (gh, gw)
TILE_SRC_IMAGE, TILE_SRC_TILE, TILE_ROT = 0, 1, 2    # tiles[n, t] = (src_image, src_tile, rot)
BOX_Y0, BOX_Y1, BOX_X0, BOX_X1, BOX_MODE, BOX_SRC = 0, 1, 2, 3, 4, 5  # box[n]


def _column(tensor_name, column, doc):
    """A named, writable view of one column (or a slice of columns) of a plan tensor.

    Reading gives a view (``plan.tile_rot[:, 0] = 2`` writes into the plan); assigning writes
    the column in place (``plan.box_src = partner``)."""

    def read(self):
        return getattr(self, tensor_name)[..., column]

    def write(self, value):
        getattr(self, tensor_name)[..., column] = value

    return property(read, write, doc=doc)


class TilePlan:
    """Per-image sampling parameters of tile-based negatives (all tensors on one device).

    Attributes: ``grid`` int64 ``[N, 2]``; ``tiles`` int64 ``[N, T, 3]`` (``T`` >= every
    ``gh * gw``; unused entries are ignored); ``box`` int64 ``[N, 6]``; ``blend_src`` int64
    ``[N]``; ``blend_w`` float32 ``[N]``. Their columns have names: ``grid_rows``,
    ``grid_cols`` (``[N]``); ``tile_src_image``, ``tile_src_tile``, ``tile_rot`` (``[N, T]``);
    ``box_bounds`` (``[N, 4]``: y0, y1, x0, x1), ``box_mode``, ``box_src`` (``[N]``).
    """

    __slots__ = ("grid", "tiles", "box", "blend_src", "blend_w")

    def __init__(self, grid, tiles, box, blend_src, blend_w):
        self.grid = grid
        self.tiles = tiles
        self.box = box
        self.blend_src = blend_src
        self.blend_w = blend_w

    grid_rows = _column("grid", GRID_ROWS, "tile rows gh of each image's grid, int64 [N]")
    grid_cols = _column("grid", GRID_COLS, "tile columns gw of each image's grid, int64 [N]")
    tile_src_image = _column("tiles", TILE_SRC_IMAGE, "image each output tile comes from, int64 [N, T]")
    tile_src_tile = _column("tiles", TILE_SRC_TILE, "tile of that image it comes from, int64 [N, T]")
    tile_rot = _column("tiles", TILE_ROT, "quarter turns counter-clockwise of each tile, int64 [N, T]")
    box_bounds = _column("box", slice(BOX_Y0, BOX_X1 + 1), "the half-open box (y0, y1, x0, x1), int64 [N, 4]")
    box_mode = _column("box", BOX_MODE, "what the box does: BOX_NONE, BOX_FILL or BOX_PASTE, int64 [N]")
    box_src = _column("box", BOX_SRC, "image a BOX_PASTE box is pasted from, int64 [N]")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def identity(cls, batch, gh=1, gw=1, device="cpu"):
        """A plan that copies every image unchanged on a ``gh x gw`` grid."""
        n_tiles = gh * gw
        ids = torch.arange(batch, device=device)
        grid = torch.tensor([gh, gw], dtype=torch.int64, device=device).repeat(batch, 1)
        tiles = torch.zeros(batch, n_tiles, 3, dtype=torch.int64, device=device)
        box = torch.zeros(batch, 6, dtype=torch.int64, device=device)  # BOX_NONE
        plan = cls(grid, tiles, box, ids.clone(), torch.ones(batch, dtype=torch.float32, device=device))
        plan.tile_src_image = ids[:, None]
        plan.tile_src_tile = torch.arange(n_tiles, device=device)[None, :]
        plan.box_src = ids
        return plan

    def tensors(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    @property
    def batch(self):
        return self.grid.shape[0]

    def to(self, device):
        # non_blocking: a blocking host-to-GPU copy waits for the whole stream, once per tensor.
        # Safe for our plans: pageable memory is staged before the call returns, and a pinned
        # source is copied blocking (the caller may change it right after).
        device = torch.device(device)
        if device.type == "cpu" or not self.grid.is_cpu:
            return TilePlan(*(t.to(device) for t in self.tensors()))
        return TilePlan(*(t.to(device, non_blocking=not t.is_pinned()) for t in self.tensors()))

    def clone(self):
        return TilePlan(*(t.clone() for t in self.tensors()))

    def padded(self, n_tiles):
        """The same plan with room for ``n_tiles`` tiles per image (extra entries unused)."""
        have = self.tiles.shape[1]
        if have >= n_tiles:
            return self
        pad = torch.zeros(self.batch, n_tiles - have, 3, dtype=self.tiles.dtype, device=self.tiles.device)
        return TilePlan(self.grid, torch.cat([self.tiles, pad], 1), self.box, self.blend_src, self.blend_w)

    @staticmethod
    def select(plans, choice):
        """Merge plans of one batch: image ``n`` takes its plan from ``plans[choice[n]]``."""
        n_tiles = max(p.tiles.shape[1] for p in plans)
        plans = [p.padded(n_tiles) for p in plans]
        out = plans[0].clone()
        for k, plan in enumerate(plans[1:], start=1):
            pick = choice == k
            for name in TilePlan.__slots__:
                getattr(out, name)[pick] = getattr(plan, name)[pick]
        return out

    def subset(self, index):
        """Rows ``index`` of the plan; image references are left as they are (into the full batch)."""
        return TilePlan(*(t[index] for t in self.tensors()))

    # -- checks -------------------------------------------------------------------------
    def check(self, images):
        """Raise ValueError when this plan does not fit ``images`` (cheap: parameters only)."""
        n, _, h, w = images.shape
        if self.batch != n:
            raise ValueError("plan is for a batch of %d images but got %d" % (self.batch, n))
        gh, gw = self.grid_rows, self.grid_cols
        if bool((gh < 1).any() or (gw < 1).any() or (gh > h).any() or (gw > w).any()):
            raise ValueError("plan grid must be between 1x1 and the image size %dx%d" % (h, w))
        if bool((gh * gw > self.tiles.shape[1]).any()):
            raise ValueError("plan has fewer tile entries than its grid needs")
        for name, idx in (("tile source", self.tile_src_image), ("blend source", self.blend_src),
                          ("box source", self.box_src)):
            if bool((idx < 0).any() or (idx >= n).any()):
                raise ValueError("plan %s index out of range for a batch of %d" % (name, n))
        if bool((self.tile_rot < 0).any() or (self.tile_rot > 3).any()):
            raise ValueError("plan rotation must be 0..3 quarter turns")
        if bool((self.box_mode < BOX_NONE).any() or (self.box_mode > BOX_PASTE).any()):
            raise ValueError("plan box mode must be 0 (none), 1 (fill) or 2 (paste)")

    def __repr__(self):
        return "TilePlan(batch=%d, max_tiles=%d)" % (self.batch, self.tiles.shape[1])
