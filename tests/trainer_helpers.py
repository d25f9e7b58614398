"""Shared helpers of the trainer tests (ops, loss, loop, snapshots, generate.py): the repository
root's path, one torch thread, the check that the C++ kernels built, and a tiny training
configuration. (conftest.py puts the repository root on sys.path.)"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RES = 16


def one_thread():
    """Body of an autouse fixture: run torch on one thread during a test. The tiny networks gain
    nothing from threads, and on a busy machine a second thread mostly waits for a core that
    another process holds, which makes each step many times slower (README, Measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def require_kernels(*ops):
    """Fail (never skip) when one of the trainer's C++ kernels ``ops`` did not build: tests that
    compare a kernel with its reference would otherwise pass on the reference alone."""
    import pytest

    from training.ops import kernels

    for op in ops:
        if not kernels.kernels_ready(op):
            pytest.fail("the %s CPU kernel did not build (or NDA_STYLEGAN_OPS=reference is set)" % op)


def seeded_randn(*shape, dtype=None, seed=0):
    """Standard-normal test input from its own generator (float64 unless ``dtype`` says)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype or torch.float64)


def tiny_config(run_dir, **overrides):
    """A training-loop config small enough for unit tests on a CPU: 16x16 built-in faces,
    16-channel networks, batch 8 in rounds of 4."""
    c = dict(
        run_dir=str(run_dir),
        training_set_kwargs=dict(class_name="training.dataset.BuiltinDataset", resolution=RES, max_size=64,
                                 use_labels=False, xflip=False),
        data_loader_kwargs=dict(num_workers=0),
        G_kwargs=dict(class_name="training.networks.Generator", z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=256, channel_max=16)),
        D_kwargs=dict(class_name="training.networks.Discriminator", channel_base=256, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=4)),
        G_opt_kwargs=dict(class_name="torch.optim.Adam", lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(class_name="torch.optim.Adam", lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        augment_kwargs=None,
        loss_kwargs=dict(class_name="training.loss.StyleGAN2Loss", r1_gamma=0.1),
        metrics=[],
        random_seed=1,
        num_gpus=1,
        batch_size=8,
        batch_gpu=4,
        ema_kimg=0.05,
        ema_rampup=0.05,
        G_reg_interval=4,
        D_reg_interval=4,
        augment_p=0,
        ada_target=None,
        ada_interval=4,
        ada_kimg=500,
        total_kimg=0.064,
        kimg_per_tick=0.032,
        image_snapshot_ticks=1,
        network_snapshot_ticks=1,
        resume=None,
        cudnn_benchmark=False,
        allow_tf32=False,
        device="cpu",
    )
    c.update(overrides)
    os.makedirs(c["run_dir"], exist_ok=True)
    return c


def common_kwargs(c_dim=0):
    return dict(c_dim=c_dim, img_resolution=RES, img_channels=3)


def tiny_networks(c_dim=0, seed=0):
    """(G, D) built from tiny_config's kwargs."""
    import torch

    from training.util import construct_class_by_name

    c = tiny_config("/tmp")  # only the kwargs are used; /tmp exists
    torch.manual_seed(seed)
    G = construct_class_by_name(**c["G_kwargs"], **common_kwargs(c_dim))
    D = construct_class_by_name(**c["D_kwargs"], **common_kwargs(c_dim))
    return G, D
