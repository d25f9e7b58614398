"""The data order of a run: an endless, seeded stream of dataset indices shared by all processes.

Global position ``g`` (the g-th real image the run consumes) maps to ``perm(epoch)[g % n]`` with
``epoch = g // n`` and a permutation seeded by (seed, epoch). Each global batch of ``batch_size``
positions is split into contiguous per-process slices, so N processes see exactly the images a
single process would see, and a resumed run starts at its saved position (= images consumed)."""

import hashlib

import torch


def derive_seed(*parts):
    """A 63-bit seed from any tuple of ints/strings (stable across runs, processes and versions)."""
    digest = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ShardedInfiniteSampler(torch.utils.data.Sampler):
    def __init__(self, dataset_size, rank=0, num_replicas=1, batch_size=1, seed=0, start=0, shuffle=True):
        if dataset_size < 1:
            raise ValueError("the dataset is empty: nothing to sample")
        if batch_size % num_replicas != 0:
            raise ValueError("batch_size %d is not divisible by the number of processes %d" % (batch_size, num_replicas))
        if not 0 <= rank < num_replicas:
            raise ValueError("rank %d is outside 0..%d" % (rank, num_replicas - 1))
        self.dataset_size = int(dataset_size)
        self.rank = rank
        self.num_replicas = num_replicas
        self.batch_size = batch_size
        self.seed = seed
        self.start = int(start)
        self.shuffle = shuffle
        self._perm_cache = {}

    def _perm(self, epoch):
        perm = self._perm_cache.get(epoch)
        if perm is None:
            if self.shuffle:
                gen = torch.Generator().manual_seed(derive_seed("data-order", self.seed, epoch))
                perm = torch.randperm(self.dataset_size, generator=gen).tolist()
            else:
                perm = list(range(self.dataset_size))
            self._perm_cache = {epoch: perm}  # epochs are visited in order: keep one
        return perm

    def index_at(self, position):
        epoch, i = divmod(position, self.dataset_size)
        return self._perm(epoch)[i]

    def __iter__(self):
        per_rank = self.batch_size // self.num_replicas
        batch_start = self.start
        while True:
            first = batch_start + self.rank * per_rank
            for position in range(first, first + per_rank):
                yield self.index_at(position)
            batch_start += self.batch_size
