"""Compute quality metrics of a trained network snapshot (stylegan2-ada-pytorch's calc_metrics.py
interface): results are printed and appended as JSON lines to ``metric-<name>.jsonl`` next to the
snapshot."""

import json
import os

# Spinning OpenMP threads made the detectors up to ~9x slower on a 2-core machine shared with other
# processes (measured); must be set before torch loads OpenMP, as train.py does.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402
import torch  # noqa: E402

from metrics import anomaly, detectors, held_out, registry  # noqa: E402
from metrics.progress import ProgressMonitor  # noqa: E402
from training.cli_types import CommaSeparatedList  # noqa: E402

NEEDS_D = ("nda_auroc",)


def load_network(path):
    """Our snapshot (.pt/.pkl) or a stylegan2-ada-pytorch pickle, through training.snapshot (no
    code from the file runs)."""
    from training.snapshot import load_network_file

    try:
        network = load_network_file(path)
    except ValueError as exc:
        raise click.UsageError("--network: %s" % exc)
    for note in network.get("notes", ()):
        click.echo("Note: %s" % note, err=True)
    return network


def nda_spec_of_run(network, run_dir):
    """The run's --nda spec: from the snapshot when it records one, else training_options.json."""
    for holder in (network.get("training_options"), network.get("loss_kwargs")):
        if isinstance(holder, dict):
            spec = holder.get("nda_spec") or (holder.get("loss_kwargs") or {}).get("nda_spec")
            if isinstance(spec, str) and spec.strip():
                return spec
    if run_dir is None:
        return None
    path = os.path.join(run_dir, "training_options.json")
    try:
        with open(path) as f:
            spec = (json.load(f).get("loss_kwargs") or {}).get("nda_spec")
    except (OSError, ValueError, AttributeError):
        return None
    return spec if isinstance(spec, str) and spec.strip() else None


def dataset_kwargs_for(network, G, data, mirror):
    if data is not None:
        if not os.path.exists(data):
            raise click.UsageError("--data: %s does not exist; give a dataset folder or zip" % data)
        kwargs = dict(class_name="training.dataset.ImageFolderDataset", path=data)
    elif network.get("training_set_kwargs"):
        kwargs = dict(network["training_set_kwargs"])
    else:
        raise click.UsageError("cannot look up the snapshot's training data; give it with --data")
    kwargs["use_labels"] = bool(G.c_dim)
    if mirror is not None:
        kwargs["xflip"] = bool(mirror)
    return kwargs


def check_dataset(kwargs, G):
    """Build the dataset once: it must exist and match the network's resolution and channels."""
    from metrics.options import construct_class_by_name

    try:
        dataset = construct_class_by_name(**kwargs)
    except Exception as exc:  # any failure to open the data is the user's input to fix
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise click.UsageError("cannot open the dataset %s (%s); check --data" % (kwargs.get("path", kwargs.get("class_name")), first))
    shape = tuple(getattr(dataset, "image_shape", ()) or ())
    res = getattr(dataset, "resolution", shape[-1] if shape else None)
    if res != G.img_resolution:
        raise click.UsageError("dataset resolution %s differs from the network's %d; give --data with %dx%d images"
                               % (res, G.img_resolution, G.img_resolution, G.img_resolution))
    if len(dataset) == 0:
        raise click.UsageError("the dataset %s holds no images" % kwargs.get("path", kwargs.get("class_name")))
    return dataset


def check_detectors(metric_names, detectors_dir):
    """Every detector the metrics read is there and usable (downloads the host's files if needed)."""
    try:
        registry.check_metric_needs(metric_names, detectors_dir)
    except detectors.DetectorUnavailableError as exc:
        raise click.UsageError(str(exc))


def run_metrics(rank, args):
    """One process: compute each metric; rank 0 reports."""
    device = torch.device("cuda", rank) if args["device"] == "cuda" else torch.device("cpu")
    for name in args["metrics"]:
        if rank == 0 and args["verbose"]:
            print("Calculating %s..." % name)
        progress = ProgressMonitor(verbose=args["verbose"] and rank == 0)
        result = registry.compute_metric(
            name, G=args["G"], dataset=args["dataset_kwargs"], device=device, D=args["D"], rank=rank,
            num_gpus=args["num_gpus"], nda_spec=args["nda_spec"], detectors_dir=args["detectors_dir"],
            progress=progress, seed=args["seed"], extra=dict(training_set_kwargs=args["training_set_kwargs"]),
            **args["overrides"])
        if rank == 0:
            registry.report_metric(result, run_dir=args["run_dir"], snapshot_pkl=args["network_pkl"])


def _metrics_epilog():
    lines = ["\b", "Available metrics:"] + ["  %-12s %s" % (name, desc) for name, desc in registry.describe_metrics()]
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
               epilog=_metrics_epilog())
@click.option("network_pkl", "--network", help="Network snapshot (.pkl or .pt), its URL, or a published name "
              "(ffhq, cifar10, ...)", metavar="PATH", required=True)
@click.option("--metrics", help="Comma-separated list or 'none'", type=CommaSeparatedList(), default="fid50k_full",
              show_default=True)
@click.option("--data", help="Dataset to compare against (folder or zip) [default: the snapshot's training data]",
              metavar="PATH")
@click.option("--mirror", help="Whether the dataset was x-flipped in training [default: look up]", type=bool, metavar="BOOL")
@click.option("--gpus", help="Number of processes (GPUs; CPU processes without a GPU)", type=int, default=1,
              metavar="INT", show_default=True)
@click.option("--verbose", help="Print progress and options", type=bool, default=True, metavar="BOOL", show_default=True)
@click.option("--detectors", "detectors_dir", help="Folder holding inception-2015-12-05.pt / vgg16.pt (offline); "
              "efficientnet-lite0-57934424.pth there replaces the installed package's copy "
              "[default: $%s, else download into the cache]" % detectors.ENV_DETECTORS, metavar="DIR")
@click.option("--seed", help="Seed of the latents and samples", type=int, default=0, show_default=True)
@click.option("--num-gen", help="Generated images (path samples for ppl_*) per metric [default: the metric's own, e.g. 50000]", type=int, metavar="INT")
@click.option("--max-real", help="Real images per metric [default: the metric's own]", type=int, metavar="INT")
@click.option("--num-images", help="Images for swd / nda_auroc [default: %d / 10000]" % registry.SWD_NUM_IMAGES, type=int, metavar="INT")
def calc_metrics(network_pkl, metrics, data, mirror, gpus, verbose, detectors_dir, seed, num_gen, max_real, num_images):
    """Calculate quality metrics for a training snapshot.

    \b
    Examples:
      python calc_metrics.py --metrics=fid50k_full,kid50k_full \\
          --network=runs/00000-faces-nda-jigsaw/network-snapshot-000200.pkl
      python calc_metrics.py --metrics=swd,nda_auroc --network=... --data=~/datasets/test.zip
      python calc_metrics.py --metrics=fid10k --network=... --detectors=~/detectors   # offline
      python calc_metrics.py --metrics=fdl0_10k_full --network=...   # offline, packaged weights
    """
    unknown = [m for m in metrics if not registry.is_valid_metric(m)]
    if unknown:
        raise click.UsageError("--metrics: " + registry.unknown_metric_message(unknown[0]))
    if gpus < 1:
        raise click.UsageError("--gpus must be at least 1")
    for flag, value in (("--num-gen", num_gen), ("--max-real", max_real), ("--num-images", num_images)):
        if value is not None and value < 2:
            raise click.UsageError("%s must be at least 2" % flag)
    if detectors_dir is not None and not os.path.isdir(detectors_dir):
        raise click.UsageError("--detectors: %s is not a folder" % detectors_dir)
    from training import pretrained

    remote = pretrained.is_remote(network_pkl) and not os.path.exists(network_pkl)
    try:
        network_pkl = pretrained.resolve_network(network_pkl)
    except pretrained.NetworkUnavailableError as exc:
        raise click.UsageError("--network: %s" % exc)
    if not os.path.isfile(network_pkl):
        raise click.UsageError("--network: %s is not a file; give a network-snapshot-*.pkl or .pt, a URL, or a "
                               "published name (%s)" % (network_pkl, ", ".join(pretrained.PUBLISHED)))
    # Results go beside a local snapshot; for a downloaded network they are printed only (as the host does).
    run_dir = None if remote else os.path.dirname(os.path.abspath(network_pkl))
    if run_dir is not None and not os.access(run_dir, os.W_OK):
        raise click.UsageError("cannot write results next to the snapshot: %s is not writable; copy the snapshot "
                               "into a writable folder" % run_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and gpus > torch.cuda.device_count():
        raise click.UsageError("--gpus=%d but only %d GPU(s) are visible" % (gpus, torch.cuda.device_count()))
    check_detectors(metrics, detectors_dir)

    if verbose:
        print('Loading network from "%s"...' % network_pkl)
    network = load_network(network_pkl)
    G = network.get("G_ema") or network.get("G")
    if G is None:
        raise click.UsageError("--network: %s holds no generator (G_ema or G)" % network_pkl)
    D = network.get("D")
    if D is None and any(m in NEEDS_D for m in metrics):
        raise click.UsageError("--metrics: nda_auroc needs the discriminator, but %s holds no D" % network_pkl)
    dataset_kwargs = dataset_kwargs_for(network, G, data, mirror)
    training_set_kwargs = dict(network.get("training_set_kwargs") or {})
    check_dataset(dataset_kwargs, G)
    nda_spec = nda_spec_of_run(network, run_dir)
    if any(m in NEEDS_D for m in metrics):
        try:
            anomaly.negatives_from_spec(nda_spec or anomaly.DEFAULT_NDA_SPEC)
        except ValueError as exc:
            raise click.UsageError("the run's NDA spec cannot be used: %s" % exc)
        try:  # nda_auroc scores only real images the networks never trained on
            held_out.held_out_reals(dataset_kwargs, training_set_kwargs, num_images=2)
        except held_out.NoHeldOutData as exc:
            raise click.UsageError(str(exc))
    if verbose:
        print("Dataset options:")
        print(json.dumps(dataset_kwargs, indent=2, default=str))

    overrides = {k: v for k, v in (("num_gen", num_gen), ("max_real", max_real), ("num_images", num_images))
                 if v is not None}
    args = dict(metrics=metrics, G=G, D=D, dataset_kwargs=dataset_kwargs, num_gpus=gpus, device=device,
                nda_spec=nda_spec, detectors_dir=detectors_dir, verbose=verbose, seed=seed, overrides=overrides,
                run_dir=run_dir, network_pkl=os.path.abspath(network_pkl), training_set_kwargs=training_set_kwargs)
    from training import distributed

    try:
        distributed.launch(run_metrics, gpus, device=device, args=(args,))
    except ValueError as exc:  # bad data or detector files found while computing (one process)
        raise click.UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except torch.multiprocessing.ProcessRaisedException as exc:  # the same from a worker: its last line
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise click.ClickException(lines[-1] if lines else "a worker process failed")


if __name__ == "__main__":
    calc_metrics()  # pylint: disable=no-value-for-parameter
