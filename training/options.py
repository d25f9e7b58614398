"""From train.py's option values to the training loop's config ``c`` (docs/contracts.md section 7).

Every check that can fail on user input happens here, before a run folder exists or a process
starts, and fails with a ``click.UsageError`` (one line, exit code 2) saying what was wrong and
how to fix it. The option meanings follow stylegan2-ada-pytorch's train.py.
"""

import click
import torch

from training import presets
from training import checks
from training import pretrained

AUG_MODES = ("ada", "noaug", "fixed")
DEFAULT_AUGPIPE = "bgc"
DEFAULT_ADA_TARGET = 0.6
BUILTIN_DATASET = "training.dataset.BuiltinDataset"
FOLDER_DATASET = "training.dataset.ImageFolderDataset"


def fail(message):
    raise click.UsageError(message)


def _process_config(gpus, torchrun_world):
    """(process count, device). Under torchrun its WORLD_SIZE is the count (--gpus may only agree)."""
    if torchrun_world is not None:
        if gpus is not None and gpus != torchrun_world:
            fail("--gpus=%d disagrees with torchrun's WORLD_SIZE=%d; drop --gpus under torchrun" % (gpus, torchrun_world))
        gpus = torchrun_world
    gpus = 1 if gpus is None else gpus
    if gpus < 1 or gpus & (gpus - 1):
        fail("--gpus must be a power of two (1, 2, 4, ...), got %d" % gpus)
    device = _device_for(gpus) if torchrun_world is None else ("cuda" if torch.cuda.is_available() else "cpu")
    return gpus, device


def _device_for(num_gpus):
    if torch.cuda.is_available():
        if num_gpus > torch.cuda.device_count():
            fail("--gpus=%d: only %d GPU(s) are visible; lower --gpus" % (num_gpus, torch.cuda.device_count()))
        return "cuda"
    return "cpu"  # several CPU processes are allowed (gloo): useful for tests and debugging


def _seed_config(seed):
    seed = 0 if seed is None else seed
    if not 0 <= seed < 2 ** 32:  # numpy's RandomState (data subset, image grid) takes no other seed
        fail("--seed must be between 0 and 4294967295 (2**32 - 1), got %d" % seed)
    return seed


def _dataset_config(data, cond, subset, mirror, seed):
    """The dataset's kwargs, its part of the run description, and its DatasetInfo."""
    if data is None:
        kwargs = dict(class_name=BUILTIN_DATASET, use_labels=True, max_size=None, xflip=False)
    else:
        kwargs = dict(class_name=FOLDER_DATASET, path=data, use_labels=True, max_size=None, xflip=False)
    info = checks.open_dataset(kwargs, option="--data" if data is not None else "built-in dataset")
    kwargs["resolution"] = info.resolution
    kwargs["max_size"] = len_all = info.size
    desc = info.name if data is not None else "builtin"
    if cond:
        if not info.has_labels:
            fail("--cond=1 needs labels, but %s has none: add a dataset.json with labels or drop --cond" % desc)
        kwargs["use_labels"] = True
        desc += "-cond"
    else:
        kwargs["use_labels"] = False
    if subset is not None:
        if not 1 <= subset <= len_all:
            fail("--subset must be between 1 and %d (the dataset's size), got %d" % (len_all, subset))
        desc += "-subset%d" % subset
        if subset < len_all:
            kwargs["max_size"] = subset
            kwargs["random_seed"] = seed
    if mirror:
        kwargs["xflip"] = True
        desc += "-mirror"
    return kwargs, desc, info


def _loader_config(device, workers):
    loader = dict(pin_memory=(device == "cuda"), num_workers=3 if device == "cuda" else 0)
    if workers is not None:
        if workers < 0:
            fail("--workers must be at least 0 (0 loads data in the training process)")
        loader["num_workers"] = workers
    if loader["num_workers"] > 0:
        loader["prefetch_factor"] = 2
    return loader


def _preset_config(cfg, resolution, gpus, device):
    """(preset name, its spec) for --cfg (auto: chosen from the resolution, processes and device)."""
    cfg = "auto" if cfg is None else cfg
    try:
        cfg_name, spec = presets.resolve_preset(cfg, resolution, gpus, has_gpu=(device == "cuda"))
    except ValueError as exc:
        fail(str(exc))
    if spec.get("resolution") and spec["resolution"] != resolution:
        fail("--cfg=%s is meant for %dx%d images, the data is %dx%d"
             % (cfg_name, spec["resolution"], spec["resolution"], resolution, resolution))
    return cfg_name, spec


def _tick_config(spec, snap):
    snap = spec.get("snap", 50) if snap is None else snap
    if snap < 1:
        fail("--snap must be at least 1 (ticks between snapshots), got %d" % snap)
    return dict(image_snapshot_ticks=snap, network_snapshot_ticks=snap, kimg_per_tick=spec.get("kimg_per_tick", 4))


def _network_config(spec, cfg_name, fp16):
    """G_kwargs, D_kwargs in stylegan2-ada's layout."""
    channel_base = spec.get("channel_base") or int(spec["fmaps"] * 32768)
    channel_max = spec.get("channel_max", 512)
    num_fp16_res = 4 if fp16 else 0
    conv_clamp = 256 if fp16 else None  # clamping only guards float16 against overflow
    G_kwargs = dict(class_name="training.networks.Generator", z_dim=spec.get("z_dim", 512), w_dim=spec.get("w_dim", 512),
                    mapping_kwargs=dict(num_layers=spec["map"]),
                    synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max,
                                          num_fp16_res=num_fp16_res, conv_clamp=conv_clamp))
    G_kwargs["synthesis_kwargs"].update(spec.get("synthesis_kwargs", {}))  # e.g. the cpu preset's use_noise=False
    D_kwargs = dict(class_name="training.networks.Discriminator", channel_base=channel_base, channel_max=channel_max,
                    num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                    block_kwargs=dict(), mapping_kwargs=dict(), epilogue_kwargs=dict(mbstd_group_size=spec["mbstd"]))
    if cfg_name == "cifar":
        D_kwargs["architecture"] = "orig"  # no residual skips in D, as in the ADA paper's CIFAR runs
    return G_kwargs, D_kwargs


def _loss_config(spec, cfg_name, gamma):
    """The optimisers' and the loss's kwargs; --gamma overrides the preset's R1 gamma."""
    c = {name: dict(class_name="torch.optim.Adam", lr=spec["lrate"], betas=[0.0, 0.99], eps=1e-8)
         for name in ("G_opt_kwargs", "D_opt_kwargs")}
    c["loss_kwargs"] = loss = dict(class_name="training.loss.StyleGAN2Loss", r1_gamma=spec["gamma"])
    loss.update(spec.get("loss_kwargs", {}))
    if cfg_name == "cifar":
        loss["pl_weight"] = 0  # no path-length regularization
        loss["style_mixing_prob"] = 0  # no style mixing
    if gamma is not None:
        if not gamma >= 0:
            fail("--gamma must be non-negative, got %g" % gamma)
        loss["r1_gamma"] = gamma
    return c


def _schedule_config(spec, device, kimg):
    """Regularisation intervals, length (--kimg overrides the preset's), CPU threads, G_ema and ADA pace."""
    c = dict(G_reg_interval=4, D_reg_interval=16, total_kimg=spec["kimg"])
    if kimg is not None:
        if not kimg > 0:
            fail("--kimg must be positive, got %g" % kimg)
        c["total_kimg"] = kimg
    if device == "cpu" and spec.get("cpu_threads"):
        c["cpu_threads"] = spec["cpu_threads"]
    c.update(ema_kimg=spec["ema"], ema_rampup=spec["ramp"], ada_interval=4, ada_kimg=500)
    return c


def _batch_config(spec, batch, num_gpus):
    if batch is None:
        batch_size = spec["mb"]
        batch_gpu = max(1, min(spec["mb"] // spec["ref_gpus"], batch_size // num_gpus))
    else:
        batch_size = batch
        batch_gpu = batch // num_gpus
    if batch_size < 1 or batch_size % num_gpus != 0:
        fail("--batch=%d must be at least 1 and divisible by the number of processes (--gpus=%d)" % (batch_size, num_gpus))
    if batch_size % (batch_gpu * num_gpus) != 0:
        fail("batch %d cannot be split into rounds of %d per process x %d processes; pick --batch as a multiple of %d"
             % (batch_size, batch_gpu, num_gpus, batch_gpu * num_gpus))
    group = min(spec["mbstd"], batch_gpu)  # the stddev layer groups at most the whole per-process batch
    if batch_gpu % group != 0:
        fail("per-process batch %d (--batch / --gpus) is not divisible by the minibatch-stddev group size %d; "
             "use a --batch that is a multiple of %d" % (batch_gpu, group, group * num_gpus))
    return dict(batch_size=batch_size, batch_gpu=batch_gpu)


def _check_probability(option, value, aug, needs_aug):
    if aug != needs_aug:
        fail("--%s can only be given with --aug=%s" % (option, needs_aug))
    if not 0 <= value <= 1:
        fail("--%s must be between 0 and 1, got %g" % (option, value))


def _augment_config(aug, p, target, augpipe):
    """The augmentation keys of the config and their part of the run description."""
    from training import augment

    pipes = checks.augment_presets(augment)
    c = dict(augment_kwargs=None, augment_p=0, ada_target=None)
    desc = ""
    if aug is not None:
        desc += "-" + aug
    aug = aug or "ada"
    if aug not in AUG_MODES:
        fail("--aug=%s is not supported; choose one of %s" % (aug, ", ".join(AUG_MODES)))
    if aug == "ada":
        c["ada_target"] = DEFAULT_ADA_TARGET
    if aug == "fixed" and p is None:
        fail("--aug=fixed needs --p (the fixed augmentation probability)")
    if p is not None:
        _check_probability("p", p, aug, "fixed")
        desc += "-p%g" % p
        c["augment_p"] = p
    if target is not None:
        _check_probability("target", target, aug, "ada")
        desc += "-target%g" % target
        c["ada_target"] = target
    if augpipe is None:
        augpipe = DEFAULT_AUGPIPE
    else:
        if aug == "noaug":
            fail("--augpipe cannot be given with --aug=noaug")
        desc += "-" + augpipe
    if augpipe not in pipes:
        fail("--augpipe=%s is unknown; choose one of %s" % (augpipe, ", ".join(pipes)))
    if aug != "noaug":
        c["augment_kwargs"] = dict(class_name="training.augment.AugmentPipe", **pipes[augpipe])
    return c, desc


def _resume_config(resume):
    """--resume's absolute path (None for noresume) and, from a bare network, the fine-tuning pace."""
    if resume is None or resume == "noresume":
        return dict(resume=None)
    c = dict(resume=checks.check_resume_file(resume))
    if not checks.has_resume_state(c["resume"]):
        # Fine-tuning from a bare network (another run's weights, an NVIDIA pickle), as the
        # host does: ADA reacts faster and G_ema starts without a ramp-up. A snapshot with
        # its run's full state continues that run exactly instead.
        c.update(ada_kimg=100, ema_rampup=None)
    return c


def _network_options(G_kwargs, D_kwargs, freezed, nhwc):
    """--freezed (frozen D layers) and --nhwc, written into the network kwargs."""
    if freezed is not None:
        if freezed < 0:
            fail("--freezed must be non-negative (number of D layers to freeze), got %d" % freezed)
        D_kwargs["block_kwargs"]["freeze_layers"] = freezed
    if nhwc:  # the networks apply it to their FP16 layers only, so it changes nothing on a CPU
        G_kwargs["synthesis_kwargs"]["fp16_channels_last"] = D_kwargs["block_kwargs"]["fp16_channels_last"] = True


def _description(dataset_desc, cfg_name, gamma, kimg, batch, aug_desc, resume, freezed):
    """The run folder's name after its number, in the host's order: data, preset, overrides,
    augmentation, transfer learning."""
    desc = "%s-%s" % (dataset_desc, cfg_name)
    for tag, value in (("-gamma%g", gamma), ("-kimg%g", kimg), ("-batch%d", batch)):
        if value is not None:
            desc += tag % value
    desc += aug_desc
    if resume is not None and resume != "noresume":
        # As the host: a published name is kept in the folder name, any other source is "custom".
        desc += "-resume%s" % resume if resume in pretrained.PUBLISHED else "-resumecustom"
    if freezed is not None:
        desc += "-freezed%d" % freezed
    return desc


def build_config(gpus=None, snap=None, metrics=None, seed=None, data=None, cond=None, subset=None, mirror=None,
                 cfg=None, gamma=None, kimg=None, batch=None, aug=None, p=None, target=None, augpipe=None,
                 resume=None, freezed=None, fp32=None, nhwc=None, allow_tf32=None, nobench=None, workers=None,
                 torchrun_world=None, download=True):
    """Return ``(desc, c, info)``: the run description (folder name without id), the loop's
    config and the dataset's DatasetInfo.

    ``torchrun_world``: the process count when torchrun started us (it then wins over --gpus).
    ``download=False`` (a dry run): detector files the metrics need are checked, never fetched.
    Each piece checks its own options; they run in this order, so the first bad option in it is
    the one reported.
    """
    gpus, device = _process_config(gpus, torchrun_world)
    seed = _seed_config(seed)
    c = dict(num_gpus=gpus, device=device, random_seed=seed)
    c["training_set_kwargs"], dataset_desc, info = _dataset_config(data, bool(cond), subset, bool(mirror), seed)
    c["data_loader_kwargs"] = _loader_config(device, workers)
    cfg_name, spec = _preset_config(cfg, info.resolution, gpus, device)
    c.update(_tick_config(spec, snap))
    c["metrics"] = checks.resolve_metrics(metrics, device, download)
    c["metrics_final_only"] = checks.metrics_final_only(metrics, device)
    fp16 = device == "cuda" and not fp32  # mixed precision is ~17x slower on a CPU: fp32 there
    c["G_kwargs"], c["D_kwargs"] = _network_config(spec, cfg_name, fp16)
    c.update(_loss_config(spec, cfg_name, gamma))
    c.update(_schedule_config(spec, device, kimg))
    c.update(_batch_config(spec, batch, gpus))
    aug_c, aug_desc = _augment_config(aug, p, target, augpipe)
    c.update(aug_c)
    c.update(_resume_config(resume))
    _network_options(c["G_kwargs"], c["D_kwargs"], freezed, nhwc)
    c["cudnn_benchmark"] = not nobench
    c["allow_tf32"] = bool(allow_tf32)
    return _description(dataset_desc, cfg_name, gamma, kimg, batch, aug_desc, resume, freezed), c, info
