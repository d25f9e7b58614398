"""Base configurations for ``train.py --cfg``: the stylegan2-ada-pytorch presets plus a CPU one.

The numbers of the GPU presets are those of the StyleGAN2-ADA paper's configurations. Fields:
``ref_gpus`` (the process count the preset was tuned for: the per-process batch is ``mb // ref_gpus``),
``kimg`` (training length), ``mb`` (global minibatch), ``mbstd`` (minibatch-stddev group size),
``fmaps`` (channel multiplier: ``channel_base = fmaps * 32768``), ``lrate`` (Adam learning rate
of G and D), ``gamma`` (R1 weight), ``ema`` (G_ema half-life in kimg), ``ramp`` (EMA ramp-up, or
None), ``map`` (mapping-network depth). A preset may pin ``channel_base``/``channel_max``/``z_dim``/
``w_dim``/``resolution``/``kimg_per_tick``/``snap`` directly and add ``loss_kwargs`` and
``synthesis_kwargs`` (G's, e.g. ``use_noise``, ``resample_filter``) and ``cpu_threads`` (torch threads per
CPU process) (the CPU preset does).
"""

import copy

CPU_PRESET = "cpu"

PRESETS = {
    # Filled in by resolve_preset() from the resolution and the process count.
    "auto": dict(ref_gpus=-1, kimg=25000, mb=-1, mbstd=-1, fmaps=-1, lrate=-1, gamma=-1, ema=-1, ramp=0.05, map=2),
    "stylegan2": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=10, ema=10, ramp=None, map=8),
    "paper256": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lrate=0.0025, gamma=1, ema=20, ramp=None, map=8),
    "paper512": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=1, lrate=0.0025, gamma=0.5, ema=20, ramp=None, map=8),
    "paper1024": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=2, ema=10, ramp=None, map=8),
    "cifar": dict(ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1, lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, map=2),
    # Small enough for a few minutes on two CPU cores at 32x32: 32 channels everywhere, short
    # mapping network, batch 16 in groups of 4, and (as `cifar`) no path-length regularisation or
    # style mixing, which cost steps and help little in a short run. Chosen by `auto` without a GPU.
    # No per-pixel noise inputs: in a run this short their learned strength grew fastest at 32 px
    # and printed the same speckle/hatching on every fake (the grids use noise_mode="const").
    # G upsamples with a box filter ([1, 1]) instead of [1, 3, 3, 1]: with the smooth filter every
    # fake of a run this short kept one shared blob-and-ring shape; with the box filter varied
    # faces appear (README, "Training with our trainer"). D keeps [1, 3, 3, 1].
    # One torch thread per process: these small layers run faster on one thread than on two (the
    # figures: README, "Measured"); more cores: `--gpus N` runs N CPU processes.
    CPU_PRESET: dict(ref_gpus=1, kimg=30, mb=16, mbstd=4, fmaps=None, lrate=0.0025, gamma=0.05, ema=2.5, ramp=0.05,
                     map=2, channel_base=1024, channel_max=32, z_dim=64, w_dim=64, kimg_per_tick=2, snap=2,
                     synthesis_kwargs=dict(use_noise=False, resample_filter=[1, 1]),
                     loss_kwargs=dict(pl_weight=0, style_mixing_prob=0), cpu_threads=1),
}

PRESET_HELP = {
    "auto": "defaults from resolution and process count; `cpu` when no GPU is present",
    "stylegan2": "StyleGAN2 config F at 1024x1024",
    "paper256": "the ADA paper's FFHQ / LSUN Cat setup at 256x256",
    "paper512": "the ADA paper's BreCaHAD / AFHQ setup at 512x512",
    "paper1024": "the ADA paper's MetFaces setup at 1024x1024",
    "cifar": "the ADA paper's CIFAR-10 setup at 32x32",
    CPU_PRESET: "tiny networks (32 channels) for a short run on a CPU",
}


def preset_names():
    return list(PRESETS)


def resolve_preset(cfg, resolution, num_gpus, has_gpu):
    """Return ``(name, spec)``: the preset's name as used in the run folder and its numbers.

    ``auto`` becomes ``auto<N>`` (with numbers computed from the resolution, as the ADA
    trainer does) on a GPU, and the ``cpu`` preset without one.
    """
    if cfg not in PRESETS:
        raise ValueError("--cfg: unknown preset %r; choose one of %s" % (cfg, ", ".join(PRESETS)))
    if cfg == "auto" and not has_gpu:
        cfg = CPU_PRESET
    spec = copy.deepcopy(PRESETS[cfg])
    if cfg != "auto":
        return cfg, spec
    res = int(resolution)
    spec["ref_gpus"] = num_gpus
    # Fewer images per GPU at high resolution keeps memory in check; at least one per GPU.
    spec["mb"] = max(min(num_gpus * min(4096 // res, 32), 64), num_gpus)
    # A fixed group size keeps the other hyperparameters' behaviour predictable.
    spec["mbstd"] = min(spec["mb"] // num_gpus, 4)
    spec["fmaps"] = 1 if res >= 512 else 0.5
    spec["lrate"] = 0.002 if res >= 1024 else 0.0025
    spec["gamma"] = 0.0002 * (res ** 2) / spec["mb"]  # the ADA paper's heuristic
    spec["ema"] = spec["mb"] * 10 / 32
    return "auto%d" % num_gpus, spec
