"""A small text progress bar for the training loop: kimg done/total, sec/kimg and ETA."""

import sys

from training.util import format_time


def render_bar(cur_kimg, total_kimg, sec_per_kimg=None, width=24):
    """``[#########---------------]  37.5% 22.5/60 kimg  3.10 s/kimg  ETA 1m 56s``"""
    frac = min(max(cur_kimg / total_kimg, 0.0), 1.0) if total_kimg > 0 else 1.0
    filled = int(round(frac * width))
    text = "[%s%s] %5.1f%% %.1f/%g kimg" % ("#" * filled, "-" * (width - filled), frac * 100, cur_kimg, total_kimg)
    if sec_per_kimg is not None and sec_per_kimg > 0:
        text += "  %.2f s/kimg  ETA %s" % (sec_per_kimg, format_time(max(total_kimg - cur_kimg, 0) * sec_per_kimg))
    return text


class ProgressBar:
    """Redraws one line on a terminal (``\\r``); prints nothing when the stream is not a tty, where
    the loop's tick lines (which include the same bar) are the record."""

    def __init__(self, total_kimg, stream=None):
        self.total_kimg = total_kimg
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = False

    def update(self, cur_kimg, sec_per_kimg=None):
        if self.live:
            self.stream.write("\r" + render_bar(cur_kimg, self.total_kimg, sec_per_kimg) + " ")
            self.stream.flush()
            self._drawn = True

    def clear(self):
        """Erase the bar before a normal line is printed."""
        if self._drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
            self._drawn = False
