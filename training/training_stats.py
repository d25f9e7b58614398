"""Training statistics: any code reports named values with ``report(name, value)``; each
``Collector`` whose regex matches the name accumulates count, sum and sum of squares until its
``update()``, which sums them over all processes (when torch.distributed is initialised) and
exposes num/mean/std per name. Collectors are independent (the tick logger and the ADA tuner
each have their own), and their pending sums can be saved and restored for exact resume."""

import re
import weakref

import numpy as np
import torch

_collectors = weakref.WeakSet()


def report(name, value):
    """Add ``value`` (number or tensor; every element counts) to the collectors that want ``name``.
    Returns ``value`` unchanged so it can be used inline. Never synchronises the device."""
    targets = [c for c in list(_collectors) if c._wants(name)]
    if not targets:
        return value
    elems = torch.as_tensor(value).detach().flatten().to(torch.float64)
    if elems.numel() == 0:
        return value
    moments = torch.stack([torch.full_like(elems[0], elems.numel()), elems.sum(), elems.square().sum()])
    for c in targets:
        c._add(name, moments)
    return value


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class Collector:
    """Collects the reported values whose names match ``regex`` (None = all).

    ``device`` is where sums are reduced across processes (CPU for gloo, the GPU for NCCL)."""

    def __init__(self, regex=".*", device="cpu"):
        self._regex = re.compile(regex if regex is not None else ".*")
        self._device = torch.device(device)
        self._wanted = {}
        self._pending = {}  # name -> tensor [count, sum, sumsq] (float64), since the last update()
        self._current = {}  # name -> (num, mean, std) as of the last update()
        _collectors.add(self)

    def _wants(self, name):
        hit = self._wanted.get(name)
        if hit is None:
            hit = self._wanted[name] = bool(self._regex.fullmatch(name))
        return hit

    def _add(self, name, moments):
        old = self._pending.get(name)
        self._pending[name] = moments.to(self._device) if old is None else old + moments.to(old.device)

    def _reduced_pending(self):
        """Pending moments summed over processes, as {name: float64 numpy [3]} (collective)."""
        names = sorted(self._pending)
        if _distributed():
            # Every rank runs the same code, so every rank reports the same names.
            stacked = torch.zeros([len(names), 3], dtype=torch.float64, device=self._device)
            for i, name in enumerate(names):
                stacked[i] = self._pending[name].to(self._device)
            torch.distributed.all_reduce(stacked)
            values = stacked.cpu().numpy()
        else:
            values = [self._pending[n].cpu().numpy() for n in names]
        return dict(zip(names, values))

    def update(self):
        """Finish the current collection window (collective when distributed)."""
        self._current = {}
        for name, (count, total, sq) in self._reduced_pending().items():
            if count <= 0:
                continue
            mean = total / count
            var = max(sq / count - mean * mean, 0.0)
            self._current[name] = (int(count), float(mean), float(np.sqrt(var)))
        self._pending = {}

    def names(self):
        return sorted(self._current)

    def num(self, name):
        return self._current.get(name, (0, float("nan"), float("nan")))[0]

    def mean(self, name):
        return self._current.get(name, (0, float("nan"), float("nan")))[1]

    def std(self, name):
        return self._current.get(name, (0, float("nan"), float("nan")))[2]

    def __getitem__(self, name):
        return self.mean(name)

    def as_dict(self):
        """{name: {num, mean, std}} as written to stats.jsonl."""
        return {n: dict(num=v[0], mean=v[1], std=v[2]) for n, v in sorted(self._current.items())}

    def state_dict(self):
        """Pending (not yet updated) sums over all processes (collective when distributed)."""
        return {n: torch.from_numpy(np.asarray(v, dtype=np.float64)) for n, v in self._reduced_pending().items()}

    def load_state_dict(self, state, rank=0):
        """Restore pending sums; only rank 0 holds them so the next update() counts them once."""
        self._pending = {}
        if rank == 0:
            for name, moments in state.items():
                self._pending[name] = torch.as_tensor(moments, dtype=torch.float64).to(self._device)
