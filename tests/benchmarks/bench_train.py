"""Seconds per kimg of training steps on the CPU, with and without NDA, as ratios from one run.

Not collected by pytest. For each architecture the networks, augment pipe and loss are built from
train.py's own config (training.options + the installed trainer plugins), once per variant from
the same seed, and one training step is timed phase by phase on the same real batch (built-in
data): ``Gmain + Dmain + Greg / G_reg_interval + Dreg / D_reg_interval``, each with its optimiser
step, i.e. the lazy-regularisation schedule of the loop. Variants take turns step by step, so
load from other processes on the machine hits them alike; medians over steps. Data loading is
left out (the same in every variant). The augment pipe runs at p=0, as at the start of a run.

    python tests/benchmarks/bench_train.py                  # cpu preset (batch 16) and cifar at batch 8
    python tests/benchmarks/bench_train.py --arch cpu --steps 40

Targets: NDA weighted adds <= 35% per step, mixture <= 3%.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: spinning OpenMP waits distort shared-CPU timings

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from training import options, plugins  # noqa: E402
from training.training_loop import _limit_cpu_threads  # noqa: E402
from training.util import construct_class_by_name  # noqa: E402

# arch -> (--cfg, --batch, default measured steps)
ARCHS = {"cpu": ("cpu", 16, 24), "cifar": ("cifar", 8, 9)}
VARIANTS = {
    "baseline": None,
    "nda weighted": dict(nda="jigsaw,stitch", nda_mode="weighted"),
    "nda mixture": dict(nda="jigsaw,stitch", nda_mode="mixture"),
    # The study's other arms: the reweighting-only control (no negatives) and jigsaw alone.
    "reweight only": dict(nda_mode="reweight", nda_lambda=0.25),
    "nda jigsaw": dict(nda="jigsaw", nda_mode="weighted"),
}


class Setup:
    def __init__(self, cfg, batch, nda):
        _, c, info = options.build_config(cfg=cfg, batch=batch, metrics=[], seed=0)
        found = plugins.discover_plugins()
        values = {p.name: {} for p in found}
        if nda is not None:
            values["nda"] = dict(nda)
        plugins.apply_plugins(c, found, values)
        self.c = c
        common = dict(c_dim=0, img_resolution=info.resolution, img_channels=info.num_channels)
        torch.manual_seed(0)
        self.G = construct_class_by_name(**c["G_kwargs"], **common).train().requires_grad_(False)
        self.D = construct_class_by_name(**c["D_kwargs"], **common).train().requires_grad_(False)
        aug = None
        if c["augment_kwargs"] is not None:
            aug = construct_class_by_name(**c["augment_kwargs"]).train().requires_grad_(False)
        self.loss = construct_class_by_name(device="cpu", G=self.G, D=self.D, augment_pipe=aug, **c["loss_kwargs"])
        self.opt = {"G": construct_class_by_name(params=self.G.parameters(), **c["G_opt_kwargs"]),
                    "D": construct_class_by_name(params=self.D.parameters(), **c["D_opt_kwargs"])}
        ds = construct_class_by_name(**dict(c["training_set_kwargs"], use_labels=False))
        self.real = torch.stack([torch.as_tensor(ds[i][0]) for i in range(batch)]).float() / 127.5 - 1
        self.labels = torch.zeros([batch, 0])
        self.batch = batch

    def phase(self, name, gain):
        net = self.G if name.startswith("G") else self.D
        opt = self.opt[name[0]]
        net.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        z = torch.randn([self.batch, self.G.z_dim])
        start = time.perf_counter()
        self.loss.accumulate_gradients(name, self.real, self.labels, z, self.labels, gain=gain, cur_nimg=0)
        opt.step()
        elapsed = time.perf_counter() - start
        net.requires_grad_(False)
        return elapsed

    def step_seconds(self):
        g_int, d_int = self.c["G_reg_interval"], self.c["D_reg_interval"]
        return (self.phase("Gmain", 1) + self.phase("Dmain", 1)
                + self.phase("Greg", g_int) / g_int + self.phase("Dreg", d_int) / d_int)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), action="append", help="architectures (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per variant (default: 24 cpu, 3 cifar)")
    args = parser.parse_args()
    rows = []
    thread_counts = {}
    default_threads = torch.get_num_threads()
    for arch in args.arch or ["cpu", "cifar"]:
        cfg, batch, steps = ARCHS[arch]
        steps = args.steps or steps
        setups = {name: Setup(cfg, batch, nda) for name, nda in VARIANTS.items()}
        # The thread count train.py would use for this config (the cpu preset caps it at one).
        torch.set_num_threads(default_threads)
        _limit_cpu_threads(torch.device("cpu"), setups["baseline"].c.get("cpu_threads"))
        thread_counts[arch] = torch.get_num_threads()
        for s in setups.values():  # warm-up: first calls build/load ops and allocate
            s.step_seconds()
        times = {name: [] for name in VARIANTS}
        for i in range(steps):
            for name, s in setups.items():
                times[name].append(s.step_seconds())
            print("  %s step %d/%d: %s" % (arch, i + 1, steps, ", ".join("%s %.3fs" % (n, t[-1]) for n, t in times.items())),
                  flush=True)
        base = statistics.median(times["baseline"])
        for name in VARIANTS:
            med = statistics.median(times[name])
            rows.append((arch, batch, name, med * 1000 / batch, med / base))
    print()
    print("threads: %s" % ", ".join("%s %d" % kv for kv in thread_counts.items()))
    print("| arch | batch | variant | s/kimg (median step) | ratio to baseline |")
    print("|---|---|---|---|---|")
    for arch, batch, name, per_kimg, ratio in rows:
        print("| %s | %d | %s | %.1f | %.3f |" % (arch, batch, name, per_kimg, ratio))


if __name__ == "__main__":
    main()
