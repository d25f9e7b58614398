"""Line plots with a shaded band, drawn with Pillow (already a dependency of the project).

Pillow writes no timestamps or version strings into a PNG, so the same numbers give the same
file byte for byte (with one Pillow version); a plotting library would add a dependency and
metadata to strip for a handful of lines and bands.
"""

import io
import math

from PIL import Image, ImageDraw, ImageFont

# Tableau's ten colours: distinct for most forms of colour blindness.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
WIDTH, HEIGHT = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 36, 52  # margins around the plot area


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(low, high, count=5):
    """Round tick values covering ``[low, high]`` (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("nice_ticks needs finite bounds")
    if high <= low:
        pad = abs(low) * 0.05 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.5:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _label(value, step):
    decimals = max(0, -int(math.floor(math.log10(step)))) if step < 1 else 0
    return "%.*f" % (decimals, value)


def band_plot(series, title, xlabel, ylabel):
    """PNG bytes. ``series``: list of ``(name, [(x, mean, low, high)])``; low/high may be None
    (no band at that x). Lines join the means; the band joins the lows and highs."""
    points = [p for _, pts in series for p in pts]
    if not points:
        raise ValueError("band_plot needs at least one point")
    xs = sorted({p[0] for p in points})
    ys = [v for p in points for v in p[1:] if v is not None and math.isfinite(v)]
    if not ys:
        raise ValueError("band_plot needs at least one finite value")
    yt = nice_ticks(min(ys), max(ys))
    x0, x1 = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1
    y0, y1 = yt[0], yt[-1]
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x):
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y):
        return TOP + (y1 - y) / (y1 - y0) * ph

    image = Image.new("RGBA", (WIDTH, HEIGHT), (255, 255, 255, 255))
    draw = ImageDraw.Draw(image)
    small, big = _font(12), _font(14)
    step = yt[1] - yt[0] if len(yt) > 1 else 1.0
    for y in yt:
        draw.line([(LEFT, py(y)), (LEFT + pw, py(y))], fill=(230, 230, 230))
        text = _label(y, step)
        draw.text((LEFT - 6, py(y)), text, fill=(0, 0, 0), font=small, anchor="rm")
    for x in xs:
        draw.line([(px(x), TOP + ph), (px(x), TOP + ph + 4)], fill=(0, 0, 0))
        draw.text((px(x), TOP + ph + 7), "%g" % x, fill=(0, 0, 0), font=small, anchor="mt")
    draw.rectangle([LEFT, TOP, LEFT + pw, TOP + ph], outline=(0, 0, 0))
    draw.text((LEFT + pw / 2, HEIGHT - 14), xlabel, fill=(0, 0, 0), font=small, anchor="ms")
    draw.text((LEFT, TOP - 12), "%s   (%s)" % (title, ylabel), fill=(0, 0, 0), font=big, anchor="ls")

    for i, (name, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        banded = [p for p in pts if p[2] is not None and p[3] is not None]
        if len(banded) >= 2:
            overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
            polygon = ([(px(x), py(hi)) for x, _, _, hi in banded] +
                       [(px(x), py(lo)) for x, _, lo, _ in reversed(banded)])
            ImageDraw.Draw(overlay).polygon(polygon, fill=color + (48,))
            image.alpha_composite(overlay)
            draw = ImageDraw.Draw(image)
        line = [(px(x), py(m)) for x, m, _, _ in pts]
        if len(line) >= 2:
            draw.line(line, fill=color, width=2)
        for x, y in line:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        ly = TOP + 8 + i * 20
        draw.rectangle([LEFT + pw + 14, ly - 5, LEFT + pw + 28, ly + 5], fill=color)
        draw.text((LEFT + pw + 34, ly), name, fill=(0, 0, 0), font=small, anchor="lm")

    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    return out.getvalue()
