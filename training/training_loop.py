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
from training.snapshot import load_network_file, save_snapshot, snapshot_stem
from training.tensorboard_log import TensorBoardLog
from training.util import EasyDict, construct_class_by_name, format_time, to_plain


class TrainingDiverged(RuntimeError):
    """Losses or gradients became NaN/Inf; the run stopped without writing a snapshot."""


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

    Raises TrainingDiverged when a loss/gradient becomes NaN/Inf (after logging one line)."""
    log = _RunLog(run_dir, rank)
    if unknown:
        log("Warning: ignoring unknown training-loop options: %s" % ", ".join(sorted(unknown)), stream=sys.stderr)
    _check_config(batch_size, batch_gpu, num_gpus, rank, total_kimg, kimg_per_tick)
    for name, kwargs in [("training_set_kwargs", training_set_kwargs), ("G_kwargs", G_kwargs), ("D_kwargs", D_kwargs),
                         ("G_opt_kwargs", G_opt_kwargs), ("D_opt_kwargs", D_opt_kwargs), ("loss_kwargs", loss_kwargs)]:
        if not kwargs or "class_name" not in kwargs:
            raise ValueError("%s must name a class with 'class_name'" % name)
    start_time = time.time()
    device = _resolve_device(device)
    _limit_cpu_threads(device, cpu_threads)
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    torch.backends.cuda.matmul.allow_tf32 = bool(allow_tf32)
    torch.backends.cudnn.allow_tf32 = bool(allow_tf32)
    stats_device = device if (device.type == "cuda" and _distributed()) else torch.device("cpu")

    # Dataset and data order.
    training_set = construct_class_by_name(**training_set_kwargs)
    log("Training set: %d images, %s, labels: %d" % (len(training_set), "x".join(map(str, training_set.image_shape)),
                                                     training_set.label_dim))

    # Networks: built from the same seed in every process, so all start identical.
    torch.manual_seed(random_seed)
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                         img_channels=training_set.num_channels)
    G = construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    construct_kwargs = dict(G=dict(G_kwargs, **common_kwargs), D=dict(D_kwargs, **common_kwargs),
                            G_ema=dict(G_kwargs, **common_kwargs), augment_pipe=augment_kwargs)

    augment_pipe = None
    if augment_kwargs is not None:
        augment_pipe = construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(float(augment_p)))
    elif augment_p or ada_target is not None:
        log("Warning: augment_p/ada_target given without augment_kwargs; training without augmentation",
            stream=sys.stderr)
    ada_stats = None
    if augment_pipe is not None and ada_target is not None:
        ada_stats = training_stats.Collector(regex="Loss/signs/real", device=stats_device)

    # Resume: networks always; optimisers, counters and statistics when the snapshot has them.
    resume_state = None
    if resume:
        data = load_network_file(resume)
        for name, module in [("G", G), ("D", D), ("G_ema", G_ema)]:
            _copy_state(data[name], module, name, resume)
        resume_state = data.get("resume_state")
        if augment_pipe is not None and resume_state is not None and "augment_p" in resume_state:
            augment_pipe.p.copy_(torch.as_tensor(float(resume_state["augment_p"])))
        log("Resumed from %s%s" % (resume, "" if resume_state else " (weights only: no training state in it)"))
    if _distributed():
        for module in (G, D, G_ema) + ((augment_pipe,) if augment_pipe is not None else ()):
            _broadcast_module(module)

    loss = construct_class_by_name(device=device, G=G, D=D, augment_pipe=augment_pipe, **loss_kwargs)
    phases = _make_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval)

    cur_nimg, cur_tick, batch_idx, tick_start_nimg = 0, 0, 0, 0
    if resume_state is not None:
        cur_nimg = int(resume_state["cur_nimg"])
        cur_tick = int(resume_state["cur_tick"])
        batch_idx = int(resume_state["batch_idx"])
        tick_start_nimg = int(resume_state["tick_start_nimg"])
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

    sampler = ShardedInfiniteSampler(len(training_set), rank=rank, num_replicas=num_gpus, batch_size=batch_size,
                                     seed=random_seed, start=cur_nimg)
    loader = torch.utils.data.DataLoader(training_set, sampler=sampler, batch_size=batch_size // num_gpus,
                                         **(data_loader_kwargs or {}))
    data_iter = iter(loader)

    # Image grids and the loss's own pictures (rank 0 only; no RNG of the run is used).
    grid_size = grid_z = grid_c = None
    if rank == 0:
        grid_size, grid_idx = pick_grid_samples(training_set, training_set.resolution, seed=random_seed)
        grid_images = torch.from_numpy(np.stack([np.asarray(training_set[i][0]) for i in grid_idx]))
        save_image_grid(grid_images.float(), os.path.join(run_dir, "reals.png"), grid_size, drange=(0, 255))
        gen = torch.Generator().manual_seed(derive_seed("grid", random_seed))
        grid_z = torch.randn([len(grid_idx), G.z_dim], generator=gen).to(device)
        grid_c = _labels_for(training_set, grid_idx).to(device)
        if resume_state is None:
            fakes = _generate_images(G_ema, grid_z, grid_c, batch_gpu)
            save_image_grid(fakes, os.path.join(run_dir, "fakes_init.png"), grid_size)
        hook = getattr(loss, "snapshot_images", None)
        if callable(hook):
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                pictures = hook(_to_float_images(grid_images, device), grid_c) or {}
            for name, images in pictures.items():
                save_image_grid(images, os.path.join(run_dir, "%s.png" % name), (grid_size[0], -(-len(images) // grid_size[0])))

    stats_collector = training_stats.Collector(regex=".*", device=stats_device)
    stats_path = os.path.join(run_dir, "stats.jsonl")
    tensorboard = TensorBoardLog(run_dir, start_time, log) if rank == 0 else None
    bar = ProgressBar(total_kimg) if rank == 0 else None
    log.bar = bar
    log("Training for %g kimg from kimg %.1f (%d process(es), batch %d, %d per round)..."
        % (total_kimg, cur_nimg / 1e3, num_gpus, batch_size, batch_gpu))

    rounds = batch_size // (batch_gpu * num_gpus)
    averager = _BufferAverager([G, D])
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    last_snapshot = None
    quality_lines = []  # the final snapshot's metrics, printed last
    done = cur_nimg >= total_kimg * 1000
    sec_per_kimg = None
    while not done:
        # One global batch of reals; this process holds its contiguous slice of it.
        phase_real_img, phase_real_c = next(data_iter)
        real_imgs = _to_float_images(phase_real_img, device).split(batch_gpu)
        real_cs = phase_real_c.to(device).to(torch.float32).split(batch_gpu)

        for phase_idx, phase in enumerate(phases):
            if batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            averager.begin()
            grad_sum = _GradientSum(phase.module, rounds)
            for round_idx in range(rounds):
                seed = derive_seed("round", random_seed, batch_idx, phase_idx, rank * rounds + round_idx)
                gen = torch.Generator().manual_seed(seed)
                gen_z = torch.randn([batch_gpu, G.z_dim], generator=gen).to(device)
                gen_c = _labels_for(training_set, torch.randint(len(training_set), [batch_gpu], generator=gen)).to(device)
                torch.manual_seed(seed)  # everything random inside the loss, G, D and the augment pipe
                loss.accumulate_gradients(phase=phase.name, real_img=real_imgs[round_idx], real_c=real_cs[round_idx],
                                          gen_z=gen_z, gen_c=gen_c, gain=phase.interval, cur_nimg=cur_nimg)
                averager.end_round()
                grad_sum.end_round()
            phase.module.requires_grad_(False)
            with torch.no_grad():
                averager.end_phase(rounds * num_gpus)
                finite = grad_sum.finish(num_gpus)
            if not finite:
                last = last_snapshot or "none written yet"
                line = ("Error: training diverged at kimg %.3f (phase %s): the losses/gradients are NaN or Inf; "
                        "stopped without writing a snapshot (last good snapshot: %s); lower the learning rate or "
                        "raise r1_gamma and resume from it" % (cur_nimg / 1e3, phase.name, last))
                log(line, stream=sys.stderr)
                raise TrainingDiverged(line)
            phase.opt.step()

        # G_ema: half-life ema_kimg, shortened at the start by the ramp-up.
        with torch.no_grad():
            ema_nimg = ema_kimg * 1000
            if ema_rampup is not None:
                ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
            ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, ema_beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

        cur_nimg += batch_size
        batch_idx += 1

        # ADA: push p towards the target sign of D's outputs on (augmented) reals.
        if ada_stats is not None and batch_idx % ada_interval == 0:
            ada_stats.update()
            signs = ada_stats["Loss/signs/real"]
            if np.isfinite(signs):
                adjust = np.sign(signs - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
                augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(0, 1))

        done = cur_nimg >= total_kimg * 1000
        if bar is not None:
            bar.update(cur_nimg / 1e3, sec_per_kimg)
        tick_due = cur_tick == 0 or cur_nimg >= tick_start_nimg + kimg_per_tick * 1000
        if not done and not tick_due:
            continue

        # ---------------------------------------------------------------- end of a tick
        tick_end_time = time.time()
        tick_kimg = (cur_nimg - tick_start_nimg) / 1e3
        sec_per_kimg = (tick_end_time - tick_start_time) / max(tick_kimg, 1e-8)
        p_now = float(augment_pipe.p) if augment_pipe is not None else 0.0
        training_stats.report("Progress/tick", cur_tick)
        training_stats.report("Progress/kimg", cur_nimg / 1e3)
        training_stats.report("Progress/augment", p_now)
        training_stats.report("Timing/total_sec", tick_end_time - start_time)
        training_stats.report("Timing/sec_per_tick", tick_end_time - tick_start_time)
        training_stats.report("Timing/sec_per_kimg", sec_per_kimg)
        training_stats.report("Timing/maintenance_sec", maintenance_time)
        training_stats.report("Resources/cpu_mem_gb", _cpu_memory_gb())
        pop_stats = getattr(loss, "pop_stats", None)
        if callable(pop_stats):
            for name, value in sorted((pop_stats() or {}).items()):
                training_stats.report(name, float(value))
        log("tick %-5d kimg %-8.1f time %-9s sec/tick %-7.1f sec/kimg %-7.2f augment %.3f  %s"
            % (cur_tick, cur_nimg / 1e3, format_time(tick_end_time - start_time), tick_end_time - tick_start_time,
               sec_per_kimg, p_now, render_bar(cur_nimg / 1e3, total_kimg, sec_per_kimg)))

        if rank == 0 and image_snapshot_ticks and (done or cur_tick % image_snapshot_ticks == 0):
            fakes = _generate_images(G_ema, grid_z, grid_c, batch_gpu)
            save_image_grid(fakes, os.path.join(run_dir, "fakes%06d.png" % (cur_nimg // 1000)), grid_size)

        snapshot_pkl = None
        if network_snapshot_ticks and (done or cur_tick % network_snapshot_ticks == 0):
            # Collective parts first (every rank), then rank 0 writes.
            loss_state = loss.state_dict() if callable(getattr(loss, "state_dict", None)) else None
            ada_state = ada_stats.state_dict() if ada_stats is not None else None
            if rank == 0:
                # A tick cut short by the end of the run is not finished: a resumed run goes on
                # with it, so its ticks (and snapshot schedule) are those of an uninterrupted run.
                state = dict(cur_nimg=cur_nimg, cur_tick=cur_tick + 1 if tick_due else cur_tick, batch_idx=batch_idx,
                             tick_start_nimg=cur_nimg if tick_due else tick_start_nimg,
                             batch_size=batch_size, random_seed=random_seed, augment_p=p_now,
                             optimizers={ph.name[0]: ph.opt.state_dict() for ph in phases if ph.interval == 1},
                             loss=loss_state, ada_stats=ada_state, rng=dict(torch=torch.get_rng_state()))
                try:
                    snapshot_pkl = save_snapshot(snapshot_stem(run_dir, cur_nimg),
                                                 dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe),
                                                 to_plain(training_set_kwargs), resume_state=state,
                                                 construct_kwargs=construct_kwargs)
                except ValueError as exc:
                    if "NaN" not in str(exc):
                        raise
                    line = "Error: training diverged at kimg %.3f: %s" % (cur_nimg / 1e3, exc)
                    log(line, stream=sys.stderr)
                    raise TrainingDiverged(line)
                last_snapshot = snapshot_pkl

        if metrics and network_snapshot_ticks and (done or (cur_tick % network_snapshot_ticks == 0
                                                            and not metrics_final_only)):
            results, quality_lines = _run_metrics(metrics, G_ema, D, training_set_kwargs, loss_kwargs, device, rank,
                                                  num_gpus, run_dir, snapshot_pkl, log)
            if tensorboard is not None:
                tensorboard.add_metric_results(results)

        stats_collector.update()
        if rank == 0:
            stats, timestamp = stats_collector.as_dict(), time.time()
            with open(stats_path, "a") as f:
                f.write(json.dumps(dict(stats, timestamp=timestamp)) + "\n")
            tensorboard.write_tick(cur_nimg, stats, timestamp)

        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time

    if bar is not None:
        bar.clear()
    if tensorboard is not None:
        tensorboard.close()
    log("Exiting...")
    for line in quality_lines:
        log(line)
    return EasyDict(cur_nimg=cur_nimg, cur_tick=cur_tick, snapshot=last_snapshot)


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
    for name in metrics:
        try:
            result = registry.compute_metric(name, G=G_ema, dataset=training_set_kwargs, device=device, D=D, rank=rank,
                                             num_gpus=num_gpus, nda_spec=(loss_kwargs or {}).get("nda_spec"))
        except Exception as exc:  # noqa: BLE001 -- whatever a metric raises, hours of training stay saved
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log("Warning: metric %s skipped: %s" % (name, first), stream=sys.stderr)
            continue
        if rank == 0:
            registry.report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
            log("Metric %s: %s" % (name, json.dumps(result.get("results", {}))))
        values.update(result.get("results", {}))
        lines.append(registry.summary_line(result))
    return values, lines
