"""Improved precision and recall (Kynkaanniemi et al., 2019): k-NN manifold estimates on VGG16
features. Precision = share of generated samples inside the real manifold, recall = share of real
samples inside the generated manifold; a manifold is the union of balls reaching each point's
k-th nearest neighbour (itself excluded)."""

import torch


def _batched_distances(rows, cols, col_batch_size):
    return torch.cat([torch.cdist(rows, c) for c in cols.split(col_batch_size)], dim=1)


def kth_neighbour_radii(manifold, k, row_batch_size=10000, col_batch_size=10000):
    """Distance of each point to its k-th nearest other point (the point itself is at distance 0)."""
    if manifold.shape[0] <= k:
        raise ValueError("a k=%d manifold needs more than %d points, got %d" % (k, k, manifold.shape[0]))
    radii = [_batched_distances(rows, manifold, col_batch_size).kthvalue(k + 1, dim=1).values
             for rows in manifold.split(row_batch_size)]
    return torch.cat(radii)


def coverage(manifold, radii, probes, row_batch_size=10000, col_batch_size=10000):
    """Share of ``probes`` within the ball of at least one manifold point."""
    inside = [(_batched_distances(rows, manifold, col_batch_size) <= radii.unsqueeze(0)).any(dim=1)
              for rows in probes.split(row_batch_size)]
    return float(torch.cat(inside).float().mean())


def precision_recall(real, gen, k=3, row_batch_size=10000, col_batch_size=10000):
    """(precision, recall) of ``gen`` against ``real`` ([N, D] tensors)."""
    real, gen = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(gen, dtype=torch.float32)
    precision = coverage(real, kth_neighbour_radii(real, k, row_batch_size, col_batch_size), gen,
                         row_batch_size, col_batch_size)
    recall = coverage(gen, kth_neighbour_radii(gen, k, row_batch_size, col_batch_size), real,
                      row_batch_size, col_batch_size)
    return precision, recall


def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size, col_batch_size):
    kwargs = dict(return_features=True)  # VGG16 fc features, as the host's precision/recall uses
    real = opts.real_stats("vgg16", kwargs, max_items=max_real, capture_all=True,
                           dataset_updates=opts.extra.get("dataset_updates")).get_all()
    gen = opts.gen_stats("vgg16", kwargs, num_gen, capture_all=True).get_all()
    if opts.rank != 0:
        return float("nan"), float("nan")
    real, gen = torch.from_numpy(real).to(opts.device), torch.from_numpy(gen).to(opts.device)
    return precision_recall(real, gen, nhood_size, row_batch_size, col_batch_size)
