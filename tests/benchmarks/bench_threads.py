"""What torch's OpenMP threads cost a D step on a CPU shared with other processes.

Not collected by pytest. Why train.py sets ``OMP_WAIT_POLICY=PASSIVE`` and why the trainer tests
run torch on one thread: the figures for README's "Measured" section. Each setting runs in a
fresh child process (the wait policy is read once, when torch loads OpenMP): one thread; two
threads with OpenMP's default waiting (spin, then sleep); two threads that wait passively. The
settings take turns round by round, so load from other processes hits them alike; each child
times D forward+backward steps after a warm-up and reports their median; the table gives the
median over rounds, as a multiple of one thread.

    python tests/benchmarks/bench_threads.py                  # both networks, 5 rounds
    python tests/benchmarks/bench_threads.py --net tests --rounds 3

Networks: ``tests`` is the trainer tests' tiny D (16 px, 16 channels, batch 8); ``cpu`` is the
``cpu`` preset's D (32 px, 32 channels, batch 16), the main job's.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = {  # name -> (torch threads, OMP_WAIT_POLICY or None for OpenMP's default)
    "1 thread": (1, None),
    "2 threads, OpenMP's default wait": (2, None),
    "2 threads, passive wait": (2, "PASSIVE"),
}
NETS = {  # name -> (batch, row label)
    "tests": (8, "the trainer tests (16 px, 16 channels)"),
    "cpu": (16, "the `cpu` preset (32 px, 32 channels)"),
}


def build_discriminator(net):
    """(D, batch of images in [-1, 1]) for one of NETS."""
    import torch

    sys.path.insert(0, REPO)
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from training.util import construct_class_by_name

    if net == "tests":
        from trainer_helpers import RES, tiny_networks

        _, D = tiny_networks()
        res = RES
    else:
        from training import options

        _, c, info = options.build_config(cfg="cpu", batch=NETS[net][0], metrics=[], seed=0)
        torch.manual_seed(0)
        res = info.resolution
        D = construct_class_by_name(**c["D_kwargs"], c_dim=0, img_resolution=res, img_channels=3)
    images = torch.rand([NETS[net][0], 3, res, res], generator=torch.Generator().manual_seed(0)) * 2 - 1
    return D, images


def child(net, threads, steps):
    """Median seconds of one D forward+backward step, printed as JSON."""
    import torch

    torch.set_num_threads(threads)
    D, images = build_discriminator(net)
    labels = torch.zeros([len(images), 0])
    times = []
    for i in range(steps + 3):  # 3 warm-up steps: kernels load, memory is allocated
        start = time.perf_counter()
        D.zero_grad(set_to_none=True)
        torch.nn.functional.softplus(D(images, labels)).mean().backward()
        if i >= 3:
            times.append(time.perf_counter() - start)
    print(json.dumps({"median": statistics.median(times)}))


def run_child(net, setting, steps):
    threads, policy = SETTINGS[setting]
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, os.path.abspath(__file__), "--child", net, "--threads", str(threads), "--steps", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=sorted(NETS), action="append", help="networks (default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="child processes per setting and network")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per child")
    parser.add_argument("--child", choices=sorted(NETS), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.threads, args.steps)
    print("%d CPU cores; load average %.1f at the start" % (os.cpu_count(), os.getloadavg()[0]))
    rows = []  # the table's rows, in README's layout: one per network, one column per setting
    for net in args.net or sorted(NETS, reverse=True):
        times = {name: [] for name in SETTINGS}
        for r in range(args.rounds):
            for name in SETTINGS:
                times[name].append(run_child(net, name, args.steps))
            print("  %s round %d/%d: %s" % (net, r + 1, args.rounds,
                                            ", ".join("%s %.1f ms" % (n, t[-1] * 1e3) for n, t in times.items())),
                  flush=True)
        medians = [statistics.median(times[name]) for name in SETTINGS]
        cells = ["%.1f ms" % (medians[0] * 1e3)] + ["%.1f ms (%.2gx)" % (m * 1e3, m / medians[0]) for m in medians[1:]]
        batch, label = NETS[net]
        rows.append("| %s | %d | %s |" % (label, batch, " | ".join(cells)))
    print("load average %.1f at the end" % os.getloadavg()[0])
    print()
    print("| D of | batch | %s |" % " | ".join(SETTINGS))
    print("|---|---|%s" % ("---|" * len(SETTINGS)))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
