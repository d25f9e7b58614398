"""Generate images with a trained generator (G_ema of a network snapshot), one PNG per seed.

Example:
    python generate.py --network runs/00000-builtin-cpu/network-snapshot-000060.pkl --seeds 0-7 --outdir out/
    python generate.py --network cifar10 --class 3 --seeds 0-7 --outdir out/   # stylegan2-ada-pytorch's network

The named file is loaded (ours or stylegan2-ada-pytorch's .pkl, or our .pt) without running code from it.
"""

import os

import click
import numpy as np
import torch

from training import pretrained
from training.grid import save_png
from training.snapshot import load_network_file
from training.util import parse_range

MAX_SEEDS = 1000000  # one PNG each: a longer list is almost surely a typo (0-99999999999 would not fit in memory)


def seed_latent(seed, z_dim):
    """The latent of a seed, as stylegan2-ada's generate.py draws it (same seed -> same image)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def class_label(G, class_idx):
    c_dim = int(getattr(G, "c_dim", 0))
    label = torch.zeros([1, c_dim])
    if c_dim == 0:
        if class_idx is not None:
            raise click.UsageError("--class=%d: this network is unconditional; drop --class" % class_idx)
        return label
    if class_idx is None:
        raise click.UsageError("this network is conditional (%d classes); choose one with --class N" % c_dim)
    if not 0 <= class_idx < c_dim:
        raise click.UsageError("--class=%d is out of range; this network has classes 0..%d" % (class_idx, c_dim - 1))
    label[0, class_idx] = 1
    return label


def to_uint8_image(img):
    """1,C,H,W float in [-1, 1] -> H,W,C uint8."""
    return (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def pick_device(name):
    """``--device`` as a torch.device that can hold tensors here; a UsageError otherwise."""
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise click.UsageError("--device: %s" % exc)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device %s: torch sees no CUDA GPU on this machine; use --device cpu "
                               "(or leave --device out)" % name)
    if device.type == "meta":
        raise click.UsageError("--device meta holds no data, so it cannot make images; use cpu or cuda")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:  # a missing driver, an index past the last GPU, ...
        raise click.UsageError("--device %s is not usable here (%s); use --device cpu or another device"
                               % (name, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__))
    return device


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", "network_path", help="Network snapshot (network-snapshot-*.pkl or .pt, a stylegan2-ada-pytorch "
              "pickle), its URL, or a published name (ffhq, cifar10, ...)", required=True, metavar="PATH")
@click.option("--seeds", help="Seeds, e.g. '0-7' or '1,5,10-12'", required=True, metavar="LIST")
@click.option("--outdir", help="Where to write the images", required=True, metavar="DIR")
@click.option("--trunc", "truncation_psi", help="Truncation psi (1 = none)", type=float, default=1.0, show_default=True)
@click.option("--class", "class_idx", help="Class label (conditional networks)", type=int, metavar="INT")
@click.option("--noise-mode", help="Noise mode", type=click.Choice(["const", "random", "none"]), default="const",
              show_default=True)
@click.option("--device", help="Device [default: cuda if available, else cpu]", metavar="DEV")
def main(network_path, seeds, outdir, truncation_psi, class_idx, noise_mode, device):
    """Generate one PNG per seed (seedNNNN.png) from a network snapshot's G_ema."""
    try:
        seed_list = parse_range(seeds, max_count=MAX_SEEDS)
    except ValueError as exc:
        raise click.UsageError("--seeds: %s" % exc)
    if any(s < 0 or s >= 2 ** 32 for s in seed_list):
        raise click.UsageError("--seeds: seeds must be between 0 and 2**32 - 1")
    if not np.isfinite(truncation_psi):
        raise click.UsageError("--trunc must be a finite number, e.g. 0.7 or 1")
    device = pick_device(device)
    try:
        data = load_network_file(pretrained.resolve_network(network_path))
    except ValueError as exc:
        raise click.UsageError("--network: %s" % exc)
    for note in data.get("notes", ()):
        click.echo("Note: %s" % note, err=True)
    G = data.get("G_ema") or data.get("G")
    if G is None:
        raise click.UsageError("--network: %s has no generator" % network_path)
    label = class_label(G, class_idx).to(device)
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as exc:
        raise click.UsageError("--outdir: cannot create %s (%s); choose a writable folder" % (outdir, exc.strerror or exc))
    G = G.to(device)

    print("Loaded %s; writing %d image(s) to %s" % (data.get("path", network_path), len(seed_list), outdir))
    with torch.no_grad():
        for seed in seed_list:
            z = seed_latent(seed, G.z_dim).to(device)
            img = G(z, label, truncation_psi=truncation_psi, noise_mode=noise_mode)
            save_png(to_uint8_image(img), os.path.join(outdir, "seed%04d.png" % seed))
    print("Done.")


if __name__ == "__main__":
    main()
