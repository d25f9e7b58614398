"""Train a StyleGAN2-ADA-style GAN; installed trainer plugins (e.g. NDA) add their own options.

The options and their meanings follow NVlabs stylegan2-ada-pytorch's train.py. Plugins are found
through the ``stylegan.trainer_plugins`` entry points (training/plugins.py), exactly as a patched
host fork finds them.
"""

import inspect
import json
import os
import sys

# OpenMP threads that spin while they wait hold cores that other processes (other ranks of
# --gpus N on a CPU, other jobs) need, so on a shared CPU every step waits for them; a passive
# wait gives the core back (figures: README, Measured). Must be set before torch loads OpenMP;
# an explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402

from nda_stylegan.fileio import atomic_write_json  # noqa: E402
from training import checks, distributed, options, plugins, presets  # noqa: E402
from training.cli_types import CommaSeparatedList  # noqa: E402
from training.run_dir import create_run_dir  # noqa: E402


def _presets_help():
    return "\n".join("  %-10s %s" % (name, presets.PRESET_HELP[name]) for name in presets.preset_names())


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.pass_context
# General options.
@click.option("--outdir", help="Where to make run folders", required=True, metavar="DIR")
@click.option("--gpus", help="Number of processes (GPUs; CPU processes without a GPU) [default: 1]", type=int, metavar="INT")
@click.option("--snap", help="Snapshot interval in ticks [default: 50; cpu preset: 5]", type=int, metavar="INT")
@click.option("--metrics", help="Comma-separated metric names, 'none', or 'auto' [default: auto = on a GPU "
              "fid50k_full if the Inception file is already on disk, else swd; on a CPU fdl0_10k_full at the final "
              "snapshot]", type=CommaSeparatedList())
@click.option("--seed", help="Random seed [default: 0]", type=int, metavar="INT")
@click.option("-n", "--dry-run", help="Print the training options and exit", is_flag=True)
# Dataset.
@click.option("--data", help="Training data (folder or zip) [default: the built-in cartoon faces]", metavar="PATH")
@click.option("--cond", help="Train a conditional model on the dataset's labels [default: false]", type=bool, metavar="BOOL")
@click.option("--subset", help="Train with only N images [default: all]", type=int, metavar="INT")
@click.option("--mirror", help="Add x-flipped copies of the data [default: false]", type=bool, metavar="BOOL")
# Base config.
@click.option("--cfg", help="Base config [default: auto]", type=click.Choice(presets.preset_names()))
@click.option("--gamma", help="Override R1 gamma", type=float)
@click.option("--kimg", help="Override training length in thousands of real images (fractions allowed)", type=float)
@click.option("--batch", help="Override the global batch size", type=int, metavar="INT")
# Discriminator augmentation.
@click.option("--aug", help="Augmentation mode [default: ada]", type=click.Choice(list(options.AUG_MODES)))
@click.option("--p", help="Augmentation probability for --aug=fixed", type=float)
@click.option("--target", help="ADA target value for --aug=ada [default: 0.6]", type=float)
@click.option("--augpipe", help="Augmentation pipeline: blit, geom, color, filter, noise, cutout, bg, bgc, bgcf, "
              "bgcfn, bgcfnc [default: bgc]", metavar="NAME")
# Transfer learning.
@click.option("--resume", help="Resume from a network snapshot, its URL, or a published name (ffhq256, ffhq512, "
              "ffhq1024, celebahq256, lsundog256, cifar10, ...) [default: noresume]", metavar="PKL")
@click.option("--freezed", help="Freeze-D: number of frozen discriminator layers [default: 0]", type=int, metavar="INT")
# Performance.
@click.option("--fp32", help="Disable mixed precision (always off on a CPU) [default: false]", type=bool, metavar="BOOL")
@click.option("--nhwc", help="Channels-last (NHWC) memory format in the FP16 layers (a CPU has none: no effect) "
              "[default: false]", type=bool, metavar="BOOL")
@click.option("--allow-tf32", help="Allow TF32 in matmul and convolutions [default: false]", type=bool, metavar="BOOL")
@click.option("--nobench", help="Disable cuDNN benchmarking (no effect on a CPU) [default: false]", type=bool,
              metavar="BOOL")
@click.option("--workers", help="DataLoader worker processes [default: 3 on GPU, 0 on CPU]", type=int, metavar="INT")
def main(ctx, outdir, dry_run, **kwargs):
    """Train a StyleGAN2-ADA-style GAN, with the options of installed trainer plugins (e.g. NDA).

    \b
    Examples:
      # The built-in dataset with jigsaw + stitch negatives (NDA); on a CPU a short run.
      python train.py --nda=jigsaw,stitch --outdir runs/
      # Conditional CIFAR-10 on 2 GPUs (the zip from CIFAR-10's own download).
      python dataset_tool.py --source cifar-10-python.tar.gz --dest cifar10.zip
      python train.py --outdir runs/ --data cifar10.zip --gpus 2 --cfg cifar --cond 1
      # Several nodes: torchrun sets RANK/WORLD_SIZE; --gpus is then taken from it.
      torchrun --nnodes 2 --nproc-per-node 8 ... train.py --outdir runs/ --data ffhq.zip

    \b
    Base configs (--cfg):
    """
    plugin_values = plugins.pop_plugin_options(kwargs, PLUGINS)
    env = distributed.torchrun_env()
    desc, c, info = options.build_config(torchrun_world=env[1] if env else None, download=not dry_run, **kwargs)
    names = plugins.apply_plugins(c, PLUGINS, plugin_values)
    desc = "-".join([desc] + names)
    checks.check_networks(c, info)
    checks.check_held_out_data(c)
    checks.check_outdir(outdir)

    is_leader = env is None or env[0] == 0
    if dry_run:
        if is_leader:
            _print_options(c, desc, outdir)
            print("Dry run; exiting.")
        return

    if env is None:
        c["run_dir"] = create_run_dir(outdir, desc)
        atomic_write_json(c["run_dir"] + "/training_options.json", c)
        _print_options(c, desc, outdir)
        print("Launching %d process(es) on %s..." % (c["num_gpus"], c["device"]))
        distributed.launch(distributed.run_training_loop, c["num_gpus"], c["device"], args=(c,))
        return

    # Under torchrun every process runs this file: rank 0 makes the folder, the others learn it.
    rank, _ = distributed.join_torchrun(c["device"])
    distributed.run_then_exit(_train_under_torchrun, rank, c, outdir, desc)


def _train_under_torchrun(rank, c, outdir, desc):
    run_dir = None
    if rank == 0:
        run_dir = create_run_dir(outdir, desc)
        c["run_dir"] = run_dir
        atomic_write_json(run_dir + "/training_options.json", c)
        _print_options(c, desc, outdir)
    c["run_dir"] = distributed.broadcast_object(run_dir)
    distributed.run_training_loop(rank, c)


def _print_options(c, desc, outdir):
    ts = c["training_set_kwargs"]
    print()
    print("Training options:")
    print(json.dumps(c, indent=2))
    print()
    print("Output directory:   %s" % c.get("run_dir", "%s/<next id>-%s" % (outdir, desc)))
    print("Training data:      %s" % ts.get("path", "built-in dataset"))
    print("Training duration:  %s kimg" % c["total_kimg"])
    print("Processes:          %d on %s" % (c["num_gpus"], c["device"]))
    print("Number of images:   %s" % ts["max_size"])
    print("Image resolution:   %s" % ts["resolution"])
    print("Conditional model:  %s" % ts["use_labels"])
    print("Dataset x-flips:    %s" % ts["xflip"])
    print("Metrics:            %s%s" % (", ".join(c["metrics"]) or "none",
                                       " (final snapshot)" if c["metrics"] and c.get("metrics_final_only") else ""))
    print()
    sys.stdout.flush()


PLUGINS = plugins.discover_plugins()
plugins.add_plugin_options(main, PLUGINS)
main.help = inspect.cleandoc(main.help) + "\n" + _presets_help()

if __name__ == "__main__":
    main()
