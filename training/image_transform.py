"""dataset_tool.py's crop and resize, with stylegan2-ada-pytorch's options and meanings:

- no ``--transform``: resize to ``--width`` x ``--height`` (a missing one keeps the image's own);
- ``center-crop``: the largest centred square, resized to ``--width`` x ``--height``;
- ``center-crop-wide`` (for wide data such as LSUN cars): a centred band of ``round(h * W / w)``
  rows at the full width ``w``, resized to ``W`` x ``H`` and centred on a black ``W`` x ``W``
  square (letterboxed). Images narrower than ``W``, or whose band would be shorter than ``H``,
  are dropped. The band is the host's, so datasets made by both tools are the same images; its
  aspect is ``W:H`` only when ``w**2 * H == h * W**2`` (an image of width ``W`` is kept whole and
  resized to ``H`` rows).

``--resize-filter`` is ``box`` or ``lanczos`` (the default). Images are PIL images in mode L or RGB.
"""

import PIL.Image

TRANSFORMS = ("center-crop", "center-crop-wide")
RESIZE_FILTERS = {"box": PIL.Image.BOX, "lanczos": PIL.Image.LANCZOS}
MIN_SIDE = 4  # the trainer's smallest resolution


def size_problem(width, height):
    """Why the trainer cannot use ``width`` x ``height`` images (a phrase), or None when it can."""
    if width != height:
        return "the trainer needs square images"
    if width < MIN_SIDE or width & (width - 1):
        return "the side must be a power of two >= %d" % MIN_SIDE
    return None


def nearest_valid_side(side):
    """The power of two >= MIN_SIDE nearest below ``side`` (or MIN_SIDE), for error messages."""
    return max(MIN_SIDE, 1 << (max(int(side), 1).bit_length() - 1))


def output_size(transform, width, height):
    """``(W, H)`` of every output image when the options fix it, else None (it then depends on the input)."""
    if transform == "center-crop-wide":
        return width, width
    if width is not None and height is not None:
        return width, height
    return None


def make_transform(transform, width, height, resize_filter="lanczos"):
    """A function ``PIL image -> PIL image``, or None for an image that ``center-crop-wide`` drops."""
    resample = RESIZE_FILTERS[resize_filter]

    def resize(img, size):
        return img if img.size == size else img.resize(size, resample)

    def plain(img):
        return resize(img, (width or img.size[0], height or img.size[1]))

    def center_crop(img):
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return resize(img.crop((left, top, left + side, top + side)), (width, height))

    def center_crop_wide(img):
        w, h = img.size
        band = int(round(width * h / w))  # the host's band, so that its datasets are reproduced
        if w < width or band < height:
            return None
        top = (h - band) // 2
        letterbox = PIL.Image.new(img.mode, (width, width))
        letterbox.paste(resize(img.crop((0, top, w, top + band)), (width, height)), (0, (width - height) // 2))
        return letterbox

    return {None: plain, "center-crop": center_crop, "center-crop-wide": center_crop_wide}[transform]
