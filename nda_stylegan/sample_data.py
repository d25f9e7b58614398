"""Built-in training data: procedural cartoon faces with strong global structure.

Every face has hair on top, two eyes above a nose above a mouth, ears on the sides, on a gradient
background, so a jigsaw or stitch negative of it is obviously wrong. Colours, sizes, positions,
gaze and head tilt vary; the label is the expression (it changes the mouth, brows and eyes).

Image ``i`` depends only on ``(seed, i)``: its random parameters come from a counter-based hash, not
from a sequential generator, so ``make_faces(10)`` is the first ten images of ``make_faces(50000)``.
Everything is drawn with signed distances and an analytic one-pixel coverage ramp (anti-aliased at
any resolution), vectorised over the batch with numpy.

Example::

    images, labels = make_faces(16, resolution=64, seed=0)   # uint8 [16, 64, 64, 3], int64 [16]
"""

import numpy as np

EXPRESSIONS = ("happy", "sad", "surprised", "angry")
NUM_CLASSES = len(EXPRESSIONS)

MIN_RESOLUTION = 4
MAX_RESOLUTION = 1024

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
# Pixels rendered per chunk: bounds the float32 working set (~20 planes of this size).
_CHUNK_PIXELS = 1 << 17


def make_faces(n, resolution=32, seed=0):
    """Return ``(images uint8 [n, resolution, resolution, 3], labels int64 [n])``."""
    n = int(n)
    if n < 0:
        raise ValueError("make_faces: n must be >= 0, got %d" % n)
    return render_faces(np.arange(n, dtype=np.int64), resolution=resolution, seed=seed)


def render_faces(indices, resolution=32, seed=0):
    """Render the faces with the given indices; ``render_faces([i])[0][0]`` is ``make_faces(i+1)[0][i]``."""
    resolution = _check_resolution(resolution)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and indices.min() < 0:
        raise ValueError("render_faces: indices must be >= 0")
    images = np.empty((indices.size, resolution, resolution, 3), dtype=np.uint8)
    labels = np.empty((indices.size,), dtype=np.int64)
    chunk = max(1, _CHUNK_PIXELS // (resolution * resolution))
    for start in range(0, indices.size, chunk):
        params = _sample_params(indices[start:start + chunk], int(seed))
        images[start:start + chunk] = _render(params, resolution)
        labels[start:start + chunk] = params["label"]
    return images, labels


def face_labels(indices, seed=0):
    """The labels of the given faces, without rendering them (cheap: one hash per image)."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    return _Streams(indices, int(seed)).integers(NUM_CLASSES)  # the first draw of _sample_params


def _check_resolution(resolution):
    try:
        res = int(resolution)
    except (TypeError, ValueError):
        raise ValueError("resolution must be an integer power of two, got %r" % (resolution,))
    if res != resolution or res < MIN_RESOLUTION or res > MAX_RESOLUTION or res & (res - 1):
        raise ValueError("resolution must be a power of two between %d and %d, got %r; pick e.g. 32"
                         % (MIN_RESOLUTION, MAX_RESOLUTION, resolution))
    return res


# ----------------------------------------------------------------------------------------------
# Counter-based random numbers: uniform(seed, index, stream) is a pure function, vectorised.

def _mix64(x):
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Streams:
    """Independent uniform [0, 1) draws per image; each call to ``next`` opens a new stream."""

    def __init__(self, indices, seed):
        with np.errstate(over="ignore"):
            base = _mix64(np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1))
            self._keys = _mix64(indices.astype(np.uint64) ^ base)
        self._stream = 0

    def uniform(self, low=0.0, high=1.0):
        self._stream += 1
        with np.errstate(over="ignore"):
            bits = _mix64(self._keys + np.uint64(self._stream) * np.uint64(0xD1B54A32D192ED03))
        u = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        return (low + (high - low) * u).astype(np.float32)

    def integers(self, count):
        return np.minimum((self.uniform() * count).astype(np.int64), count - 1)


def _hsv(h, s, v):
    """HSV in [0, 1] -> RGB [..., 3] float32 (vectorised)."""
    h6 = (h % 1.0) * 6.0
    k = np.stack([(5 + h6) % 6, (3 + h6) % 6, (1 + h6) % 6], axis=-1)
    rgb = v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)
    return rgb.astype(np.float32)


SKIN_TONES = np.array([[255, 224, 196], [241, 194, 150], [224, 172, 125], [198, 134, 86],
                       [160, 102, 62], [112, 70, 45], [255, 205, 148]], dtype=np.float32) / 255
HAIR_COLOURS = np.array([[30, 22, 18], [90, 56, 30], [170, 110, 50], [230, 200, 120],
                         [160, 50, 30], [200, 200, 205], [60, 60, 140]], dtype=np.float32) / 255


def _sample_params(indices, seed):
    r = _Streams(indices, seed)
    n = indices.size
    p = {"label": r.integers(NUM_CLASSES)}  # must stay the first draw: face_labels relies on it
    # Background: vertical gradient between two colours of random hue.
    p["bg_top"] = _hsv(r.uniform(), r.uniform(0.2, 0.6), r.uniform(0.55, 0.95))
    p["bg_bottom"] = _hsv(r.uniform(), r.uniform(0.2, 0.7), r.uniform(0.3, 0.8))
    # Head geometry in image units ([-1, 1] across the image, y pointing down).
    p["cx"] = r.uniform(-0.12, 0.12)
    p["cy"] = r.uniform(-0.02, 0.14)
    p["rx"] = r.uniform(0.5, 0.64)
    p["ry"] = p["rx"] * r.uniform(1.05, 1.3)
    p["tilt"] = r.uniform(-0.18, 0.18)
    skin = SKIN_TONES[r.integers(len(SKIN_TONES))] * r.uniform(0.9, 1.05)[:, None]
    p["skin"] = np.clip(skin, 0, 1)
    p["hair"] = np.clip(HAIR_COLOURS[r.integers(len(HAIR_COLOURS))] * r.uniform(0.8, 1.15)[:, None], 0, 1)
    p["hair_volume"] = r.uniform(1.04, 1.22)        # hair ellipse relative to the head
    p["fringe"] = r.uniform(0.35, 0.6)              # fringe line height above the eyes
    p["fringe_wave"] = r.uniform(0.0, 0.08)
    p["fringe_phase"] = r.uniform(0, 2 * np.pi)
    # Eyes and the rest.
    p["eye_dx"] = r.uniform(0.32, 0.42)
    p["eye_dy"] = r.uniform(-0.3, -0.15)
    p["eye_r"] = r.uniform(0.13, 0.19)
    p["iris"] = _hsv(r.uniform(), r.uniform(0.4, 0.9), r.uniform(0.25, 0.7))
    p["gaze_x"] = r.uniform(-0.35, 0.35)
    p["gaze_y"] = r.uniform(-0.25, 0.25)
    p["nose_len"] = r.uniform(0.12, 0.22)
    p["mouth_y"] = r.uniform(0.42, 0.55)
    p["mouth_w"] = r.uniform(0.28, 0.42)
    p["lip"] = _hsv(r.uniform(-0.03, 0.03), r.uniform(0.5, 0.8), r.uniform(0.45, 0.75))
    p["blush"] = (r.uniform() < 0.5).astype(np.float32)
    assert all(v.shape[0] == n for v in p.values())
    return p


# ----------------------------------------------------------------------------------------------
# Drawing: distances in face units, coverage = clip(0.5 - d / pixel, 0, 1).

def _coverage(dist, pixel):
    return np.clip(0.5 - dist / pixel, 0.0, 1.0)


def _ellipse_dist(x, y, rx, ry):
    """Signed distance-like field of an axis-aligned ellipse: exact for circles; for the mildly
    elongated ellipses used here it only changes the anti-aliasing ramp width slightly."""
    return (np.hypot(x / rx, y / ry) - 1.0) * np.minimum(rx, ry)


def _segment_dist(x, y, ax, ay, bx, by, radius):
    """Distance to a capsule from (ax, ay) to (bx, by) with the given radius."""
    px, py, dx, dy = x - ax, y - ay, bx - ax, by - ay
    t = np.clip((px * dx + py * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(px - t * dx, py - t * dy) - radius


def _arc_dist(x, y, cx, cy, radius, half_angle, thickness, downward):
    """Distance to a thick circular arc centred on the vertical axis through (cx, cy)."""
    px, py = x - cx, y - cy
    if not downward:
        py = -py
    inside = np.abs(px) <= py * np.tan(half_angle)  # within the arc's angular range
    ring = np.abs(np.hypot(px, py) - radius) - thickness
    ex, ey = radius * np.sin(half_angle), radius * np.cos(half_angle)
    cap = np.hypot(np.abs(px) - ex, py - ey) - thickness
    return np.where(inside, ring, cap)


def _col(v):
    return np.asarray(v, dtype=np.float32)[:, None, None]


class _Canvas:
    """A batch of float RGB images plus the face frame of each image.

    Small features are drawn in per-image windows (gathered, painted, scattered back): each window
    has the same pixel size across the batch but its own position, which keeps the cost of the
    eyes, brows, nose and mouth a small fraction of the full-frame layers.
    """

    def __init__(self, p, res):
        self.res = res
        self.pixel = 2.0 / res
        self.n = p["label"].shape[0]
        self.cx, self.cy, self.rx = p["cx"], p["cy"], p["rx"]
        self.cos, self.sin = np.cos(p["tilt"]), np.sin(p["tilt"])
        t = (np.arange(res, dtype=np.float32) + 0.5) / res
        top, bottom = p["bg_top"][:, None, None, :], p["bg_bottom"][:, None, None, :]
        self.image = np.ascontiguousarray(
            np.broadcast_to(top + t[None, :, None, None] * (bottom - top), (self.n, res, res, 3)))
        self._window = None
        self._full_coords = None

    def full(self):
        """Select the whole image; returns face coordinates (u, v) of its pixels."""
        self._window = None
        if self._full_coords is None:
            idx = np.broadcast_to(np.arange(self.res), (self.n, self.res))
            self._full_coords = self._face_coords(idx, idx)
        return self._full_coords

    def window(self, u, v, half):
        """Select a square window around face point (u, v) [N] with half-size ``half`` face units."""
        x, y = self._image_coords(u, v)
        size = int(np.ceil(2 * np.max(half * self.rx) / self.pixel)) + 2
        size = min(size, self.res)
        offs = np.arange(size)
        cols = np.clip(np.floor((x + 1) / self.pixel - size / 2 + 0.5).astype(np.int64), 0, self.res - size)
        rows = np.clip(np.floor((y + 1) / self.pixel - size / 2 + 0.5).astype(np.int64), 0, self.res - size)
        cols, rows = cols[:, None] + offs, rows[:, None] + offs
        self._window = (np.arange(self.n)[:, None, None], rows[:, :, None], cols[:, None, :])
        return self._face_coords(cols, rows)

    def begin(self):
        return self.image if self._window is None else self.image[self._window]

    def end(self, patch):
        if self._window is not None:
            self.image[self._window] = patch

    def paint(self, patch, dist, colour, opacity=1.0):
        """Alpha-composite ``colour`` [N, 3] with coverage of distance ``dist`` (face units)."""
        a = _coverage(dist * _col(self.rx), self.pixel)
        if not np.isscalar(opacity) or opacity != 1.0:
            a = a * opacity
        # patch += a * (colour - patch): three passes over the RGB data instead of four.
        diff = np.asarray(colour, np.float32).reshape(-1, 1, 1, 3) - patch
        diff *= a[..., None]
        patch += diff

    def _face_coords(self, cols, rows):
        # Pixel centres in image units, then into the tilted face frame in units of rx.
        gx = ((cols + 0.5) * self.pixel - 1.0).astype(np.float32)[:, None, :] - _col(self.cx)
        gy = ((rows + 0.5) * self.pixel - 1.0).astype(np.float32)[:, :, None] - _col(self.cy)
        c, s, r = _col(self.cos), _col(self.sin), _col(self.rx)
        return (c * gx + s * gy) / r, (c * gy - s * gx) / r

    def _image_coords(self, u, v):
        u, v = u * self.rx, v * self.rx
        return self.cx + self.cos * u - self.sin * v, self.cy + self.sin * u + self.cos * v


WHITE = np.array([0.98, 0.98, 0.98], np.float32)
BLACK = np.array([0.05, 0.05, 0.07], np.float32)
BLUSH = np.array([0.95, 0.45, 0.45], np.float32)
OPEN_MOUTH = np.array([0.35, 0.06, 0.08], np.float32)


def _render(p, res):
    cv = _Canvas(p, res)
    label = p["label"]
    zeros = np.zeros_like(p["cx"])
    aspect = _col(p["ry"] / p["rx"])

    # Full-frame layers: hair behind the head, ears, head, fringe.
    u, v = cv.full()
    img = cv.begin()
    vol = _col(p["hair_volume"])
    hair = _ellipse_dist(u, v + 0.18, vol, aspect * vol * 0.95)
    cv.paint(img, hair, p["hair"])
    for side in (-1.0, 1.0):
        u, v = cv.window(zeros + side * 0.98, zeros - 0.05, 0.3)
        ear = cv.begin()
        cv.paint(ear, _ellipse_dist(u - side * 0.98, v + 0.05, 0.17, 0.24), p["skin"] * 0.93)
        cv.end(ear)
    u, v = cv.full()
    img = cv.begin()
    head = _ellipse_dist(u, v, 1.0, aspect)
    cv.paint(img, head, p["skin"])
    fringe_line = (_col(p["eye_dy"] - p["fringe"])
                   + _col(p["fringe_wave"]) * np.sin(u * 9.0 + _col(p["fringe_phase"])))
    # Clip the fringe by the hair outline, not the head's: both edges would leave a skin halo.
    cv.paint(img, np.maximum(hair, v - fringe_line), p["hair"])

    # Cheeks (blush): always on happy faces, faint on half of the others.
    blush = _col(np.where(label == 0, 0.45, p["blush"] * 0.22))
    for side in (-1.0, 1.0):
        u, v = cv.window(zeros + side * 0.55, zeros + 0.25, 0.2)
        img = cv.begin()
        cv.paint(img, _ellipse_dist(u - side * 0.55, v - 0.25, 0.16, 0.1), BLUSH, blush)
        cv.end(img)

    # Eyes (white, iris, pupil, highlight) and brows: surprised eyes are bigger and the brows
    # raised, angry eyes narrower with brows slanted down to the nose, sad brows slanted up.
    eye_r = p["eye_r"] * np.select([label == 2, label == 3], [1.25, 0.9], 1.0).astype(np.float32)
    eye_h = eye_r * np.where(label == 3, 0.7, 1.1).astype(np.float32)
    lift = _col(np.where(label == 2, 0.14, 0.0))
    slant = _col(np.select([label == 3, label == 1], [0.09, -0.07], 0.0))
    er, eh, ey = _col(eye_r), _col(eye_h), _col(p["eye_dy"])
    for side in (-1.0, 1.0):
        ex_n = side * p["eye_dx"]
        u, v = cv.window(ex_n, p["eye_dy"] - 0.2, 0.45)
        img = cv.begin()
        ex = _col(ex_n)
        white = _ellipse_dist(u - ex, v - ey, er, eh)
        cv.paint(img, white, WHITE)
        ix = ex + _col(p["gaze_x"]) * er * 0.45
        iy = ey + _col(p["gaze_y"]) * eh * 0.35
        ring = np.hypot(u - ix, v - iy)
        cv.paint(img, np.maximum(ring - er * 0.6, white), p["iris"])
        cv.paint(img, np.maximum(ring - er * 0.3, white), BLACK)
        cv.paint(img, np.hypot(u - ix + er * 0.2, v - iy + er * 0.2) - er * 0.12, WHITE)
        by = ey - eh - 0.1 - lift
        inner_x, outer_x = ex - side * er * 0.9, ex + side * er * 1.1
        cv.paint(img, _segment_dist(u, v, inner_x, by + slant, outer_x, by - slant * 0.3, 0.045),
                 p["hair"] * 0.8)
        cv.end(img)

    # Nose and mouth share one window below the eyes.
    u, v = cv.window(zeros, p["mouth_y"] - 0.12, 0.55)
    img = cv.begin()
    cv.paint(img, _segment_dist(u, v, 0.0, 0.05, 0.0, 0.05 + _col(p["nose_len"]), 0.06), p["skin"] * 0.78)
    my, mw = _col(p["mouth_y"]), _col(p["mouth_w"])
    smile = _arc_dist(u, v, 0.0, my - mw * 0.9, mw * 1.2, 0.75, 0.065, downward=True)
    frown = _arc_dist(u, v, 0.0, my + 0.1 + mw * 0.8, mw * 1.0, 0.7, 0.06, downward=False)
    gasp = _ellipse_dist(u, v - my - 0.03, mw * 0.45, mw * 0.55)
    flat = _segment_dist(u, v, -mw * 0.8, my + 0.06, mw * 0.8, my + 0.02, 0.06)
    mouth = _choose(label, [smile, frown, gasp, flat])
    # Lips are a darkened skin tone tinted by the lip colour: visible on every skin tone.
    lips = p["skin"] * 0.25 + p["lip"] * 0.15
    cv.paint(img, mouth, np.where((label == 2)[:, None], OPEN_MOUTH, lips))
    cv.end(img)

    return np.clip(np.rint(cv.image * 255.0), 0, 255).astype(np.uint8)


def _choose(label, options):
    out = options[-1].copy()
    for k, opt in enumerate(options[:-1]):
        out = np.where((label == k)[:, None, None], opt, out)
    return out
