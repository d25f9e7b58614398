"""Progress reporting for long metric computations (feature extraction, generation, scoring).

A ``ProgressMonitor`` prints one line per ``flush_interval`` items when verbose, and maps its own
progress onto a caller's ``progress_fn(done, total)`` range, so nested stages (dataset features,
then generator features) report one continuous bar to a training loop.
"""

import sys
import time


def format_time(seconds):
    """Seconds as the host prints them: ``42s``, ``3m 05s``, ``2h 01m 07s``, ``1d 03h 20m``."""
    s = int(round(float(seconds)))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm %02ds" % (s // 60, s % 60)
    if s < 86400:
        return "%dh %02dm %02ds" % (s // 3600, (s // 60) % 60, s % 60)
    return "%dd %02dh %02dm" % (s // 86400, (s // 3600) % 24, (s // 60) % 60)


class ProgressMonitor:
    """Counts processed items of one stage; ``sub()`` makes a monitor for a part of this range.

    Args:
        tag: name printed in front of each line (no line is printed without a tag).
        num_items: expected total, or None when unknown.
        verbose: print lines to ``stream``.
        progress_fn: optional ``fn(done, total)`` called with this stage's share of [lo, hi].
    """

    def __init__(self, tag=None, num_items=None, flush_interval=1000, verbose=False,
                 progress_fn=None, lo=0.0, hi=1000.0, total=1000.0, stream=None):
        self.tag = tag
        self.num_items = num_items
        self.flush_interval = max(int(flush_interval), 1)
        self.verbose = verbose
        self.progress_fn = progress_fn
        self.lo, self.hi, self.total = float(lo), float(hi), float(total)
        self.stream = stream
        self.start_time = time.time()
        self._last_time = self.start_time
        self._last_items = 0
        if progress_fn is not None:
            progress_fn(self.lo, self.total)

    def update(self, cur_items):
        """Report that ``cur_items`` items of this stage are done."""
        finished = self.num_items is not None and cur_items >= self.num_items
        if cur_items < self._last_items + self.flush_interval and not finished:
            return
        now = time.time()
        per_item = (now - self._last_time) / max(cur_items - self._last_items, 1)
        if self.verbose and self.tag is not None:
            of = "" if self.num_items is None else "/%d" % self.num_items
            stream = self.stream if self.stream is not None else sys.stdout
            stream.write("%-19s items %d%s  time %-10s ms/item %.2f\n"
                         % (self.tag, cur_items, of, format_time(now - self.start_time), per_item * 1e3))
            stream.flush()
        self._last_time, self._last_items = now, cur_items
        if self.progress_fn is not None and self.num_items:
            frac = min(cur_items / self.num_items, 1.0)
            self.progress_fn(self.lo + (self.hi - self.lo) * frac, self.total)

    def sub(self, tag=None, num_items=None, flush_interval=1000, rel_lo=0.0, rel_hi=1.0):
        """A monitor for the share [rel_lo, rel_hi] of this one's range, with the same output."""
        span = self.hi - self.lo
        return ProgressMonitor(tag=tag, num_items=num_items, flush_interval=flush_interval,
                               verbose=self.verbose, progress_fn=self.progress_fn,
                               lo=self.lo + span * rel_lo, hi=self.lo + span * rel_hi,
                               total=self.total, stream=self.stream)
