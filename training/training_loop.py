"""The training loop of our StyleGAN2-ADA-style trainer (docs/contracts.md section 7).

Per iteration: one global batch of reals, then the phases Gmain, Greg, Dmain, Dreg (regularisation
phases only every G_reg_interval / D_reg_interval iterations), each accumulating gradients over
rounds of ``batch_gpu`` samples, averaging them over the global batch and all processes, then one
optimiser step; then the G_ema update and, every ``ada_interval`` iterations, the ADA p update.

Determinism (for exact resume and for N processes == 1 process): the data order is a function of
(seed, images consumed), and every round reseeds the RNGs from (seed, iteration, phase, global
round index), so the latents, labels, augmentations and noise of a sample never depend on how
the global batch is split between processes or on where a run was resumed.
"""

import copy
import dataclasses
import json
import os
import re
import sys
import time

import numpy as np
import torch

from training import training_stats
from training.grid import pick_grid_samples, save_image_grid
from training.progress import ProgressBar, render_bar
from training.sampler import ShardedInfiniteSampler, derive_seed
from training.snapshot import kimg_stem, load_network_file, save_snapshot, snapshot_stem
from training.tensorboard_log import TensorBoardLog
from training.util import EasyDict, construct_class_by_name, format_time, to_plain


class TrainingDiverged(RuntimeError):
    """Losses or gradients became NaN/Inf; the run stopped without writing a snapshot."""


class MetricFailed(RuntimeError):
    """A metric failed in one process of a multi-process run, mid-computation: the others may be
    waiting in its collectives, so the run stops (its snapshot is already on disk)."""


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


# ---------------------------------------------------------------------------- logging
class _RunLog:
    """Rank 0 prints to stdout and appends the same lines to <run_dir>/log.txt."""

    def __init__(self, run_dir, rank):
        self.path = os.path.join(run_dir, "log.txt") if rank == 0 else None
        self.rank = rank
        self.bar = None

    def __call__(self, line, stream=None):
        if self.rank != 0:
            return
        if self.bar is not None:
            self.bar.clear()
        print(line, file=stream or sys.stdout, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------------------- setup helpers
def _check_config(batch_size, batch_gpu, num_gpus, rank, total_kimg, kimg_per_tick):
    if num_gpus < 1 or batch_gpu < 1 or batch_size < 1:
        raise ValueError("num_gpus, batch_size and batch_gpu must be >= 1")
    if batch_size % (batch_gpu * num_gpus) != 0:
        raise ValueError("batch_size %d must be a multiple of batch_gpu %d x num_gpus %d" % (batch_size, batch_gpu, num_gpus))
    world = torch.distributed.get_world_size() if _distributed() else 1
    if world != num_gpus:
        raise ValueError("num_gpus=%d but %d process(es) are running; start one process per GPU" % (num_gpus, world))
    if not 0 <= rank < num_gpus:
        raise ValueError("rank %d is outside 0..%d" % (rank, num_gpus - 1))
    if total_kimg <= 0 or kimg_per_tick <= 0:
        raise ValueError("total_kimg and kimg_per_tick must be > 0")


def _resolve_device(device):
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _make_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval):
    phases = []
    for name, module, opt_kwargs, reg_interval in [("G", G, G_opt_kwargs, G_reg_interval),
                                                   ("D", D, D_opt_kwargs, D_reg_interval)]:
        if reg_interval is None:
            opt = construct_class_by_name(params=module.parameters(), **opt_kwargs)
            phases.append(EasyDict(name=name + "both", module=module, opt=opt, interval=1))
            continue
        # Lazy regularisation: the main phase runs reg_interval/(reg_interval+1) of the steps'
        # worth of updates, so lr and the Adam betas are rescaled to keep the same time constants.
        ratio = reg_interval / (reg_interval + 1)
        opt_kwargs = EasyDict(opt_kwargs)
        if "lr" in opt_kwargs:
            opt_kwargs.lr = opt_kwargs.lr * ratio
        if "betas" in opt_kwargs:
            opt_kwargs.betas = [float(beta) ** ratio for beta in opt_kwargs.betas]
        opt = construct_class_by_name(params=module.parameters(), **opt_kwargs)
        phases.append(EasyDict(name=name + "main", module=module, opt=opt, interval=1))
        phases.append(EasyDict(name=name + "reg", module=module, opt=opt, interval=reg_interval))
    return phases


def _labels_for(training_set, indices):
    labels = [np.asarray(training_set.get_label(int(i)), dtype=np.float32) for i in indices]
    return torch.from_numpy(np.stack(labels))


def _to_float_images(images, device):
    return images.to(device).to(torch.float32) / 127.5 - 1


def _broadcast_module(module):
    for tensor in list(module.parameters()) + list(module.buffers()):
        torch.distributed.broadcast(tensor.data, src=0)


def _copy_state(src, dst, name, path):
    """Copy a snapshot network's state into this run's; one-line ValueError on another architecture."""
    if src is None:
        raise ValueError("resume: %s has no %s network; give a snapshot written by train.py" % (path, name))
    have, want = src.state_dict(), dst.state_dict()
    for key in sorted(set(have) | set(want)):
        if key not in have or key not in want or have[key].shape != want[key].shape:
            raise ValueError("resume: %s holds a %s of another architecture (%s: snapshot %s, this run %s); use the "
                             "settings it was trained with" % (path, name, key,
                                                                tuple(have[key].shape) if key in have else "missing",
                                                                tuple(want[key].shape) if key in want else "missing"))
    dst.load_state_dict(have)


class _GradientSum:
    """Sums one phase's gradients round by round, then averages them over rounds and processes.

    Each round's gradient is taken whole before being added, so one process with rounds r0, r1
    computes r0 + r1 exactly as two processes' all-reduce does (bitwise, for two processes);
    letting autograd accumulate would add the rounds' partial terms in another order, and Adam
    magnifies such rounding differences in near-zero gradients."""

    def __init__(self, module, rounds):
        self.module = module
        self.rounds = rounds
        self.params = None
        self.total = None

    def end_round(self):
        if self.rounds == 1:
            return  # the gradients in .grad are already the round's
        # Parameters without a gradient (unused in this phase) stay untouched by the optimiser;
        # every round and process runs the same code, so all agree on which ones they are.
        if self.params is None:
            self.params = [p for p in self.module.parameters() if p.grad is not None]
        if not self.params:
            return
        flat = torch.cat([p.grad.flatten() for p in self.params])
        self.total = flat if self.total is None else self.total + flat
        for p in self.params:
            p.grad = None

    def finish(self, num_gpus):
        """Average into .grad over all rounds and processes; False if any value is NaN/Inf."""
        if self.rounds == 1:
            self.params = [p for p in self.module.parameters() if p.grad is not None]
            if self.params:
                self.total = torch.cat([p.grad.flatten() for p in self.params])
        if not self.params:
            return True
        flat = self.total
        if _distributed():
            torch.distributed.all_reduce(flat)
        flat /= self.rounds * num_gpus
        finite = bool(torch.isfinite(flat).all())
        for p, g in zip(self.params, flat.split([p.numel() for p in self.params])):
            p.grad = g.view_as(p).clone()
        return finite


# Running-average buffers (stylegan's naming: G.mapping.w_avg, ..._ema) change during a phase.
EMA_BUFFER_RE = re.compile(r"(^|.*\.)[^.]+_(avg|ema)$")


class _BufferAverager:
    """Makes running-average buffers independent of how a batch is split: every round starts
    from the phase's starting value, and the phase ends with the mean of the rounds' updates over
    all rounds and processes (one EMA step over the global batch)."""

    def __init__(self, modules):
        self.buffers = [b for m in modules for name, b in m.named_buffers()
                        if b.is_floating_point() and EMA_BUFFER_RE.match(name)]

    def begin(self):
        self.start = [b.detach().clone() for b in self.buffers]
        self.deltas = [torch.zeros_like(b) for b in self.buffers]

    @torch.no_grad()
    def end_round(self):
        for b, b0, d in zip(self.buffers, self.start, self.deltas):
            d += b - b0
            b.copy_(b0)

    def end_phase(self, divisor):
        if not self.buffers:
            return
        flat = torch.cat([d.flatten() for d in self.deltas])
        if _distributed():
            torch.distributed.all_reduce(flat)
        flat /= divisor
        for b, d in zip(self.buffers, flat.split([b.numel() for b in self.buffers])):
            b.add_(d.view_as(b))


def _generate_images(G_ema, z, c, batch):
    out = []
    with torch.no_grad():
        for zb, cb in zip(z.split(batch), c.split(batch)):
            out.append(G_ema(zb, cb, noise_mode="const").cpu())
    return torch.cat(out)


def _cpu_memory_gb():
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: kB
    except (ImportError, AttributeError):
        return float("nan")


def _limit_cpu_threads(device, cpu_threads):
    """Cap torch's intra-op threads on a CPU run (the cpu preset's tiny layers ran faster on one
    thread than on two); an explicit OMP_NUM_THREADS from the user wins."""
    if device.type != "cpu" or not cpu_threads or "OMP_NUM_THREADS" in os.environ:
        return
    torch.set_num_threads(max(1, min(torch.get_num_threads(), int(cpu_threads))))


# ---------------------------------------------------------------------------- where a run stands
@dataclasses.dataclass
class _Progress:
    """Where a run stands: images shown, ticks finished, batches trained, and the image count at
    which the current tick began. A snapshot records these; a resumed run starts from them."""

    cur_nimg: int = 0
    cur_tick: int = 0
    batch_idx: int = 0
    tick_start_nimg: int = 0

    @classmethod
    def from_resume_state(cls, state):
        return cls(**{name: int(state[name]) for name in ("cur_nimg", "cur_tick", "batch_idx", "tick_start_nimg")})

    def done(self, total_kimg):
        return self.cur_nimg >= total_kimg * 1000

    def tick_due(self, kimg_per_tick):
        """The first batch ends tick 0 (an early sign of life); every later tick spans kimg_per_tick."""
        return self.cur_tick == 0 or self.cur_nimg >= self.tick_start_nimg + kimg_per_tick * 1000

    def end_batch(self, batch_size):
        self.cur_nimg += batch_size
        self.batch_idx += 1

    def end_tick(self):
        self.cur_tick += 1
        self.tick_start_nimg = self.cur_nimg

    def counters_to_resume(self, tick_due):
        """The counters a snapshot taken now records. A tick cut short by the end of the run is not
        finished: a resumed run goes on with it, so its ticks (and snapshot schedule) are those of
        an uninterrupted run."""
        return dict(cur_nimg=self.cur_nimg, cur_tick=self.cur_tick + 1 if tick_due else self.cur_tick,
                    batch_idx=self.batch_idx, tick_start_nimg=self.cur_nimg if tick_due else self.tick_start_nimg)


class _TickClock:
    """Wall-clock times for the tick report: since the start, within this tick, and the
    maintenance (snapshots, metrics, logs) between the last tick's end and this tick's start."""

    def __init__(self, start_time):
        self.start_time = start_time
        self.tick_start = time.time()
        self.maintenance = self.tick_start - start_time
        self.tick_end = None
        self.sec_per_kimg = None

    def end_tick(self, tick_kimg):
        self.tick_end = time.time()
        self.sec_per_kimg = (self.tick_end - self.tick_start) / max(tick_kimg, 1e-8)

    def start_tick(self):
        self.tick_start = time.time()
        self.maintenance = self.tick_start - self.tick_end


class _Run(EasyDict):
    """What a run carries from stage to stage, made by _set_up: its options ``opts`` and ``log``,
    the ``device``, the ``training_set`` and its batch iterator ``reals``, the networks ``nets``
    (G, D, G_ema, augment_pipe) with the ``construct_kwargs`` a snapshot records, the ``loss``, the
    optimiser ``phases``, ``rounds`` per phase, the buffer ``averager``, ``ada_stats``, the
    ``progress`` counters, the image ``grid`` (rank 0), the statistics writers (``stats``,
    ``stats_path``, ``tensorboard``), the progress ``bar``, the tick ``clock``, the
    ``last_snapshot`` written and the ``quality_lines`` of its metrics, printed last."""


# ---------------------------------------------------------------------------- the loop
def training_loop(
    rank=0,
    run_dir=".",
    training_set_kwargs=None,
    data_loader_kwargs=None,
    G_kwargs=None,
    D_kwargs=None,
    G_opt_kwargs=None,
    D_opt_kwargs=None,
    augment_kwargs=None,
    loss_kwargs=None,
    metrics=(),
    metrics_final_only=False,
    random_seed=0,
    num_gpus=1,
    batch_size=8,
    batch_gpu=8,
    ema_kimg=10,
    ema_rampup=0.05,
    G_reg_interval=4,
    D_reg_interval=16,
    augment_p=0,
    ada_target=None,
    ada_interval=4,
    ada_kimg=500,
    total_kimg=25000,
    kimg_per_tick=4,
    image_snapshot_ticks=50,
    network_snapshot_ticks=50,
    resume=None,
    cudnn_benchmark=True,
    allow_tf32=False,
    device="cpu",
    cpu_threads=None,
    **unknown,
):
    """Train; returns an EasyDict(cur_nimg, cur_tick, snapshot) with the last snapshot's .pkl path.

    A run walks through four stages: the set-up (_set_up), then one training batch after another
    (_train_one_batch, itself the optimiser phases Gmain ... Dreg), and at the end of each tick the
    tick report (_report_tick) and the snapshot with its metrics (_save_snapshot_and_metrics)
    before the tick's statistics are written.

    Raises TrainingDiverged when a loss/gradient becomes NaN/Inf (after logging one line)."""
    opts = EasyDict(locals())  # the options above, by name, for the stages
    del opts["unknown"]
    log = _RunLog(run_dir, rank)
    if unknown:
        log("Warning: ignoring unknown training-loop options: %s" % ", ".join(sorted(unknown)), stream=sys.stderr)
    _check_config(batch_size, batch_gpu, num_gpus, rank, total_kimg, kimg_per_tick)
    _check_class_kwargs(training_set_kwargs=training_set_kwargs, G_kwargs=G_kwargs, D_kwargs=D_kwargs,
                        G_opt_kwargs=G_opt_kwargs, D_opt_kwargs=D_opt_kwargs, loss_kwargs=loss_kwargs)
    run = _set_up(opts, log)
    progress = run.progress
    while not progress.done(total_kimg):
        _train_one_batch(run)
        done = progress.done(total_kimg)
        if run.bar is not None:
            run.bar.update(progress.cur_nimg / 1e3, run.clock.sec_per_kimg)
        tick_due = progress.tick_due(kimg_per_tick)
        if done or tick_due:
            _end_tick(run, tick_due, done)
    return _finish(run)


def _check_class_kwargs(**kwargs_by_name):
    for name, kwargs in kwargs_by_name.items():
        if not kwargs or "class_name" not in kwargs:
            raise ValueError("%s must name a class with 'class_name'" % name)


# ---------------------------------------------------------------------------- stage 1: set-up
def _set_up(opts, log):
    """Everything before the first batch. The order matters for exact resume: the networks are
    built from the run's seed, then a snapshot's state (its torch RNG last) replaces theirs."""
    o = opts
    start_time = time.time()
    device = _configure_torch(o.device, o.cpu_threads, o.cudnn_benchmark, o.allow_tf32)
    stats_device = device if (device.type == "cuda" and _distributed()) else torch.device("cpu")
    training_set = construct_class_by_name(**o.training_set_kwargs)
    log("Training set: %d images, %s, labels: %d" % (len(training_set), "x".join(map(str, training_set.image_shape)),
                                                     training_set.label_dim))
    nets, construct_kwargs = _build_networks(o, training_set, device, log)
    ada_stats = None
    if nets.augment_pipe is not None and o.ada_target is not None:
        ada_stats = training_stats.Collector(regex="Loss/signs/real", device=stats_device)
    resume_state = _load_resume(o.resume, nets, log) if o.resume else None
    if _distributed():
        for module in nets.values():
            if module is not None:
                _broadcast_module(module)

    loss = construct_class_by_name(device=device, G=nets.G, D=nets.D, augment_pipe=nets.augment_pipe, **o.loss_kwargs)
    phases = _make_phases(nets.G, nets.D, o.G_opt_kwargs, o.D_opt_kwargs, o.G_reg_interval, o.D_reg_interval)
    progress = _restore_training_state(resume_state, phases, loss, ada_stats, o.rank)
    reals = _batches_of_reals(training_set, o, start=progress.cur_nimg)
    grid = None
    if o.rank == 0:
        grid = _save_start_images(o, training_set, nets.G_ema, loss, device, fakes=resume_state is None)

    run = _Run(opts=o, log=log, device=device, training_set=training_set, reals=reals, nets=nets,
               construct_kwargs=construct_kwargs, loss=loss, phases=phases,
               rounds=o.batch_size // (o.batch_gpu * o.num_gpus), averager=_BufferAverager([nets.G, nets.D]),
               ada_stats=ada_stats, progress=progress, grid=grid,
               stats=training_stats.Collector(regex=".*", device=stats_device),
               stats_path=os.path.join(o.run_dir, "stats.jsonl"),
               tensorboard=TensorBoardLog(o.run_dir, start_time, log) if o.rank == 0 else None,
               bar=ProgressBar(o.total_kimg) if o.rank == 0 else None, last_snapshot=None,
               quality_lines=[])
    log.bar = run.bar
    log("Training for %g kimg from kimg %.1f (%d process(es), batch %d, %d per round)..."
        % (o.total_kimg, progress.cur_nimg / 1e3, o.num_gpus, o.batch_size, o.batch_gpu))
    run.clock = _TickClock(start_time)
    return run


def _configure_torch(device, cpu_threads, cudnn_benchmark, allow_tf32):
    device = _resolve_device(device)
    _limit_cpu_threads(device, cpu_threads)
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    torch.backends.cuda.matmul.allow_tf32 = bool(allow_tf32)
    torch.backends.cudnn.allow_tf32 = bool(allow_tf32)
    return device


def _build_networks(opts, training_set, device, log):
    """G, D, G_ema and the augment pipe (None without augment_kwargs), built from the same seed in
    every process so all start identical; and the constructor arguments a snapshot records."""
    o = opts
    torch.manual_seed(o.random_seed)
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                         img_channels=training_set.num_channels)
    G = construct_class_by_name(**o.G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = construct_class_by_name(**o.D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    if o.augment_kwargs is not None:
        augment_pipe = construct_class_by_name(**o.augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(float(o.augment_p)))
    elif o.augment_p or o.ada_target is not None:
        log("Warning: augment_p/ada_target given without augment_kwargs; training without augmentation",
            stream=sys.stderr)
    construct_kwargs = dict(G=dict(o.G_kwargs, **common_kwargs), D=dict(o.D_kwargs, **common_kwargs),
                            G_ema=dict(o.G_kwargs, **common_kwargs), augment_pipe=o.augment_kwargs)
    return EasyDict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe), construct_kwargs


def _load_resume(path, nets, log):
    """Copy a snapshot's networks (and its ADA p) into ``nets``; returns its resume_state, or None
    for a snapshot with weights only."""
    data = load_network_file(path)
    for name in ("G", "D", "G_ema"):
        _copy_state(data[name], nets[name], name, path)
    resume_state = data.get("resume_state")
    if nets.augment_pipe is not None and resume_state is not None and "augment_p" in resume_state:
        nets.augment_pipe.p.copy_(torch.as_tensor(float(resume_state["augment_p"])))
    log("Resumed from %s%s" % (path, "" if resume_state else " (weights only: no training state in it)"))
    return resume_state


def _restore_training_state(resume_state, phases, loss, ada_stats, rank):
    """The progress counters of a snapshot's run (zero without one), and its optimiser moments,
    loss state, ADA statistics and torch RNG put back in place."""
    if resume_state is None:
        return _Progress()
    progress = _Progress.from_resume_state(resume_state)
    for phase in phases:
        opt_state = resume_state["optimizers"].get(phase.name[0])
        if opt_state is not None and phase.interval == 1:
            phase.opt.load_state_dict(opt_state)
    if resume_state.get("loss") is not None and hasattr(loss, "load_state_dict"):
        loss.load_state_dict(resume_state["loss"])
    if ada_stats is not None and resume_state.get("ada_stats") is not None:
        ada_stats.load_state_dict(resume_state["ada_stats"], rank=rank)
    rng = resume_state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    return progress


def _batches_of_reals(training_set, opts, start):
    """This process's slices of the global batches from image ``start`` on (the order depends on
    the seed and the images consumed only)."""
    o = opts
    sampler = ShardedInfiniteSampler(len(training_set), rank=o.rank, num_replicas=o.num_gpus, batch_size=o.batch_size,
                                     seed=o.random_seed, start=start)
    loader = torch.utils.data.DataLoader(training_set, sampler=sampler, batch_size=o.batch_size // o.num_gpus,
                                         **(o.data_loader_kwargs or {}))
    return iter(loader)


def _save_start_images(opts, training_set, G_ema, loss, device, fakes):
    """Rank 0: the grid of reals, G_ema's first fakes (``fakes``: not on resume) and the loss's own
    pictures; returns the grid (size, z, c) later fakes use. No RNG of the run is touched."""
    o = opts
    grid_size, grid_idx = pick_grid_samples(training_set, training_set.resolution, seed=o.random_seed)
    grid_images = torch.from_numpy(np.stack([np.asarray(training_set[i][0]) for i in grid_idx]))
    save_image_grid(grid_images.float(), os.path.join(o.run_dir, "reals.png"), grid_size, drange=(0, 255))
    gen = torch.Generator().manual_seed(derive_seed("grid", o.random_seed))
    grid = EasyDict(size=grid_size, z=torch.randn([len(grid_idx), G_ema.z_dim], generator=gen).to(device),
                    c=_labels_for(training_set, grid_idx).to(device))
    if fakes:
        save_image_grid(_generate_images(G_ema, grid.z, grid.c, o.batch_gpu), os.path.join(o.run_dir, "fakes_init.png"),
                        grid.size)
    hook = getattr(loss, "snapshot_images", None)
    if callable(hook):
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            pictures = hook(_to_float_images(grid_images, device), grid.c) or {}
        for name, images in pictures.items():
            rows = -(-len(images) // grid_size[0])
            save_image_grid(images, os.path.join(o.run_dir, "%s.png" % name), (grid_size[0], rows))
    return grid


# ---------------------------------------------------------------------------- stage 2: one training batch
def _train_one_batch(run):
    """One global batch of reals through the phases Gmain, Greg, Dmain, Dreg (each when due), then
    the G_ema update and, every ada_interval batches, the ADA step."""
    o, progress = run.opts, run.progress
    real_img, real_c = next(run.reals)  # this process's contiguous slice of the global batch
    real_imgs = _to_float_images(real_img, run.device).split(o.batch_gpu)
    real_cs = real_c.to(run.device).to(torch.float32).split(o.batch_gpu)
    for phase_idx, phase in enumerate(run.phases):
        if progress.batch_idx % phase.interval == 0:
            _run_phase(run, phase_idx, phase, real_imgs, real_cs)
    _update_G_ema(run.nets.G_ema, run.nets.G, _ema_beta(o.ema_kimg, o.ema_rampup, o.batch_size, progress.cur_nimg))
    progress.end_batch(o.batch_size)
    if run.ada_stats is not None and progress.batch_idx % o.ada_interval == 0:
        _adapt_augment_p(run)


def _run_phase(run, phase_idx, phase, real_imgs, real_cs):
    """One optimiser step of one phase: its gradients summed over this process's rounds, averaged
    over the global batch; a NaN/Inf gradient stops the run before the step."""
    o, progress = run.opts, run.progress
    phase.opt.zero_grad(set_to_none=True)
    phase.module.requires_grad_(True)
    run.averager.begin()
    grad_sum = _GradientSum(phase.module, run.rounds)
    for round_idx in range(run.rounds):
        seed = derive_seed("round", o.random_seed, progress.batch_idx, phase_idx, o.rank * run.rounds + round_idx)
        gen_z, gen_c = _round_inputs(seed, o.batch_gpu, run.nets.G.z_dim, run.training_set, run.device)
        run.loss.accumulate_gradients(phase=phase.name, real_img=real_imgs[round_idx], real_c=real_cs[round_idx],
                                      gen_z=gen_z, gen_c=gen_c, gain=phase.interval, cur_nimg=progress.cur_nimg)
        run.averager.end_round()
        grad_sum.end_round()
    phase.module.requires_grad_(False)
    with torch.no_grad():
        run.averager.end_phase(run.rounds * o.num_gpus)
        finite = grad_sum.finish(o.num_gpus)
    if not finite:
        _diverged(run, "Error: training diverged at kimg %.3f (phase %s): the losses/gradients are NaN or Inf; "
                       "stopped without writing a snapshot (last good snapshot: %s); lower the learning rate or "
                       "raise r1_gamma and resume from it"
                  % (progress.cur_nimg / 1e3, phase.name, run.last_snapshot or "none written yet"))
    phase.opt.step()


def _round_inputs(seed, batch_gpu, z_dim, training_set, device):
    """A round's latents and labels, drawn from the round's own seed; the global RNG is then
    seeded with it too, for everything random inside the loss, G, D and the augment pipe."""
    gen = torch.Generator().manual_seed(seed)
    gen_z = torch.randn([batch_gpu, z_dim], generator=gen).to(device)
    gen_c = _labels_for(training_set, torch.randint(len(training_set), [batch_gpu], generator=gen)).to(device)
    torch.manual_seed(seed)
    return gen_z, gen_c


def _ema_beta(ema_kimg, ema_rampup, batch_size, cur_nimg):
    """G_ema's decay for one batch: half-life ema_kimg, shortened at the start by the ramp-up."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def _update_G_ema(G_ema, G, beta):
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def _ada_step(signs, ada_target, batch_size, ada_interval, ada_kimg):
    """ADA's change of p after ada_interval batches: towards the side where the mean sign of D's
    outputs on (augmented) reals meets the target, at a pace that could move p by 1 in ada_kimg."""
    return np.sign(signs - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)


def _adapt_augment_p(run):
    o, p = run.opts, run.nets.augment_pipe.p
    run.ada_stats.update()
    signs = run.ada_stats["Loss/signs/real"]
    if np.isfinite(signs):
        p.copy_((p + _ada_step(signs, o.ada_target, o.batch_size, o.ada_interval, o.ada_kimg)).clamp(0, 1))


def _diverged(run, line):
    run.log(line, stream=sys.stderr)
    raise TrainingDiverged(line)


# ---------------------------------------------------------------------------- the end of a tick
def _end_tick(run, tick_due, done):
    """The tick report, the snapshot with its metrics when one is due, the tick's statistics
    (gathered from every process) on disk; then the next tick starts."""
    _report_tick(run)
    _save_snapshot_and_metrics(run, tick_due, done)
    _write_tick_stats(run)
    run.progress.end_tick()
    run.clock.start_tick()


def _augment_p(nets):
    return float(nets.augment_pipe.p) if nets.augment_pipe is not None else 0.0


# ---------------------------------------------------------------------------- stage 3: the tick report
def _report_tick(run):
    """Time the tick, report its progress, timing and the loss's own statistics, log the tick line."""
    progress, clock = run.progress, run.clock
    clock.end_tick((progress.cur_nimg - progress.tick_start_nimg) / 1e3)
    p_now = _augment_p(run.nets)
    for name, value in _tick_stats(progress, clock, p_now):
        training_stats.report(name, value)
    pop_stats = getattr(run.loss, "pop_stats", None)
    if callable(pop_stats):
        for name, value in sorted((pop_stats() or {}).items()):
            training_stats.report(name, float(value))
    run.log(_tick_line(progress, clock, p_now, run.opts.total_kimg))


def _tick_stats(progress, clock, augment_p):
    """The Progress/, Timing/ and Resources/ statistics of an ended tick, in report order."""
    return [("Progress/tick", progress.cur_tick), ("Progress/kimg", progress.cur_nimg / 1e3),
            ("Progress/augment", augment_p), ("Timing/total_sec", clock.tick_end - clock.start_time),
            ("Timing/sec_per_tick", clock.tick_end - clock.tick_start), ("Timing/sec_per_kimg", clock.sec_per_kimg),
            ("Timing/maintenance_sec", clock.maintenance), ("Resources/cpu_mem_gb", _cpu_memory_gb())]


def _tick_line(progress, clock, augment_p, total_kimg):
    kimg, total_sec = progress.cur_nimg / 1e3, clock.tick_end - clock.start_time
    return ("tick %-5d kimg %-8.1f time %-9s sec/tick %-7.1f sec/kimg %-7.2f augment %.3f  %s"
            % (progress.cur_tick, kimg, format_time(total_sec), clock.tick_end - clock.tick_start, clock.sec_per_kimg,
               augment_p, render_bar(kimg, total_kimg, clock.sec_per_kimg)))


# ---------------------------------------------------------------------------- stage 4: snapshot + metrics
def _snapshot_due(every_ticks, cur_tick, done):
    """Snapshots come every ``every_ticks`` ticks and at the end of the run; never for 0/None."""
    return bool(every_ticks) and (done or cur_tick % every_ticks == 0)


def _save_snapshot_and_metrics(run, tick_due, done):
    """When due: G_ema's fakes on the image grid, the network snapshot, then its metrics (with
    metrics_final_only, those of the last snapshot only)."""
    o = run.opts
    cur_tick = run.progress.cur_tick
    if o.rank == 0 and _snapshot_due(o.image_snapshot_ticks, cur_tick, done):
        fakes = _generate_images(run.nets.G_ema, run.grid.z, run.grid.c, o.batch_gpu)
        # Named like the snapshots, so grids of runs shorter than a kimg never overwrite each other.
        save_image_grid(fakes, kimg_stem(o.run_dir, "fakes", run.progress.cur_nimg, (".png",)) + ".png", run.grid.size)
    if not _snapshot_due(o.network_snapshot_ticks, cur_tick, done):
        return
    snapshot_pkl = _save_network_snapshot(run, tick_due)
    if o.metrics and (done or not o.metrics_final_only):
        results, run.quality_lines = _run_metrics(o.metrics, run.nets.G_ema, run.nets.D, o.training_set_kwargs,
                                                  o.loss_kwargs, run.device, o.rank, o.num_gpus, o.run_dir,
                                                  snapshot_pkl, run.log)
        if run.tensorboard is not None:
            run.tensorboard.add_metric_results(results)


def _save_network_snapshot(run, tick_due):
    """The networks and everything a resumed run needs to continue exactly; returns the .pkl path
    (None on ranks > 0). A network that holds NaN/Inf stops the run instead."""
    o, progress = run.opts, run.progress
    # Collective parts first (every rank), then rank 0 writes.
    loss_state = run.loss.state_dict() if callable(getattr(run.loss, "state_dict", None)) else None
    ada_state = run.ada_stats.state_dict() if run.ada_stats is not None else None
    if o.rank != 0:
        return None
    state = _resume_state(progress, tick_due, o.batch_size, o.random_seed, _augment_p(run.nets), run.phases,
                          loss_state, ada_state)
    try:
        snapshot_pkl = save_snapshot(snapshot_stem(o.run_dir, progress.cur_nimg), dict(run.nets),
                                     to_plain(o.training_set_kwargs), resume_state=state,
                                     construct_kwargs=run.construct_kwargs)
    except ValueError as exc:
        if "NaN" not in str(exc):
            raise
        _diverged(run, "Error: training diverged at kimg %.3f: %s" % (progress.cur_nimg / 1e3, exc))
    run.last_snapshot = snapshot_pkl
    return snapshot_pkl


def _resume_state(progress, tick_due, batch_size, random_seed, augment_p, phases, loss_state, ada_state):
    """What a snapshot records beside the networks: the progress counters, the run's batch size,
    seed and ADA p, the main phases' optimiser states (keyed G, D), the loss's and ADA's state and
    the torch RNG."""
    return dict(progress.counters_to_resume(tick_due), batch_size=batch_size, random_seed=random_seed,
                augment_p=augment_p, optimizers={ph.name[0]: ph.opt.state_dict() for ph in phases if ph.interval == 1},
                loss=loss_state, ada_stats=ada_state, rng=dict(torch=torch.get_rng_state()))


def _run_metrics(metrics, G_ema, D, training_set_kwargs, loss_kwargs, device, rank, num_gpus, run_dir, snapshot_pkl, log):
    """Compute and report each metric of a snapshot; returns one plain line per metric
    (``fdl0_10k_full 23.4 (lower is better)``). The snapshot is already on disk: a metric that
    fails (its detector went missing, its data cannot be read) is skipped with a warning, and
    training goes on."""
    try:
        from metrics import registry
    except ImportError as exc:
        log("Skipping metrics %s: the metrics package cannot be imported (%s)" % (", ".join(metrics), exc))
        return {}, []
    values, lines = {}, []
    for name in _usable_metrics(registry, metrics, device, num_gpus, log):
        try:
            result = registry.compute_metric(name, G=G_ema, dataset=training_set_kwargs, device=device, D=D, rank=rank,
                                             num_gpus=num_gpus, nda_spec=(loss_kwargs or {}).get("nda_spec"))
        except Exception as exc:  # noqa: BLE001 -- whatever a metric raises, hours of training stay saved
            if num_gpus > 1:
                raise MetricFailed("metric %s failed in process %d of %d (%s); the others cannot go on in step "
                                   "with it, so the run stops here. Its latest snapshot in %s is saved: continue "
                                   "with --resume, without that metric" % (name, rank, num_gpus, _first_line(exc),
                                                                           run_dir))
            log("Warning: metric %s skipped: %s" % (name, _first_line(exc)), stream=sys.stderr)
            continue
        if rank == 0:
            registry.report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
            log("Metric %s: %s" % (name, json.dumps(result.get("results", {}))))
        values.update(result.get("results", {}))
        lines.append(registry.summary_line(result))
    return values, lines


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _usable_metrics(registry, metrics, device, num_gpus, log):
    """The metrics whose detectors every process has. Checked on each process and agreed on
    (a minimum over the processes) before any metric starts: one that a single process cannot
    run is skipped by all of them, because a process leaving a metric early would put the
    others' collectives out of step."""
    usable, reasons = [], {}
    for name in metrics:
        try:
            registry.check_metric_needs([name], download=False)  # the run's start checked and fetched them
            usable.append(1)
        except Exception as exc:  # noqa: BLE001 -- a detector file gone or damaged since the start
            usable.append(0)
            reasons[name] = _first_line(exc)
    if num_gpus > 1:
        flags = torch.tensor(usable, dtype=torch.int32, device=device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
        usable = flags.tolist()
    for name, ok in zip(metrics, usable):
        if not ok:
            log("Warning: metric %s skipped: %s" % (name, reasons.get(name, "another process cannot run it")),
                stream=sys.stderr)
    return [name for name, ok in zip(metrics, usable) if ok]


def _write_tick_stats(run):
    """Every process gathers the tick's statistics (collective); rank 0 appends them to
    stats.jsonl and TensorBoard."""
    run.stats.update()
    if run.opts.rank == 0:
        stats, timestamp = run.stats.as_dict(), time.time()
        with open(run.stats_path, "a") as f:
            f.write(json.dumps(dict(stats, timestamp=timestamp)) + "\n")
        run.tensorboard.write_tick(run.progress.cur_nimg, stats, timestamp)


def _finish(run):
    if run.bar is not None:
        run.bar.clear()
    if run.tensorboard is not None:
        run.tensorboard.close()
    run.log("Exiting...")
    for line in run.quality_lines:
        run.log(line)
    return EasyDict(cur_nimg=run.progress.cur_nimg, cur_tick=run.progress.cur_tick, snapshot=run.last_snapshot)
