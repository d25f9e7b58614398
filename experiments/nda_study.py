"""Does NDA help? The study driver: run it, see what is left, promote the sweep's best, report.

    python experiments/nda_study.py run --part main --workers 2     # stop it at any moment; rerun to continue
    python experiments/nda_study.py status
    python experiments/nda_study.py promote                         # once the sweep is finished
    python experiments/nda_study.py report experiments/results/nda-study.jsonl
    python experiments/nda_study.py rerun experiments/results/nda-study.jsonl --part main --arm baseline --seed 0

The arms, seeds, budgets and metrics are declared in experiments/study_plan.py.
"""

import json
import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # experiments/, training/ and metrics/ live in the checkout
    sys.path.insert(0, REPO)

import click  # noqa: E402

from experiments import study_plan, study_runner, study_status  # noqa: E402
from experiments.study_results import index_results, read_results  # noqa: E402

DEFAULT_RESULTS = os.path.join("experiments", "results", "nda-study.jsonl")
DEFAULT_WORKDIR = os.path.join("experiments", "runs")  # ignored by git (runs/)
DEFAULT_RERUN_WORKDIR = os.path.join(DEFAULT_WORKDIR, "rerun")


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _load_study(plan):
    if plan is None:
        return study_plan.STUDY
    try:
        with open(plan) as f:
            data = json.load(f)
    except OSError as exc:
        raise click.UsageError("--plan: cannot read %s (%s)" % (plan, exc.strerror or exc))
    except ValueError as exc:
        raise click.UsageError("--plan: %s is not valid JSON (%s)" % (plan, exc))
    try:
        return study_plan.study_from_dict(data)
    except ValueError as exc:
        raise click.UsageError("--plan: %s" % exc)


def _parts(study, parts):
    names = list(parts) or study.part_names()
    for name in names:
        if name not in study.part_names():
            raise click.UsageError("--part: unknown part %r; choose from %s" % (name, ", ".join(study.part_names())))
    return names


def _check_metrics(study):
    """Every metric of the plan must exist in this checkout before hours of training start."""
    from metrics import registry

    for metric in study.metrics:
        if not registry.is_valid_metric(metric.name):
            raise click.UsageError("the plan's metric %r is not in this checkout's calc_metrics.py (it has %s); "
                                   "update the checkout or change the plan before any run starts"
                                   % (metric.name, ", ".join(registry.list_metrics())))


plan_option = click.option("--plan", metavar="FILE", help="A study plan as JSON [default: experiments/study_plan.py]")
results_option = click.option("--results", default=None, metavar="FILE",
                              help="Results file [default: %s]" % DEFAULT_RESULTS)
workdir_option = click.option("--workdir", default=None, metavar="DIR",
                              help="Where run folders go [default: %s]" % DEFAULT_WORKDIR)
part_option = click.option("--part", "parts", multiple=True, metavar="NAME",
                           help="Part(s) of the study: main, limited, sweep [default: all, in that order]")


def _default(path, default):
    """Given paths are relative to the current folder, defaults to the repository."""
    return os.path.abspath(path) if path is not None else os.path.join(REPO, default)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def cli():
    """Does NDA help? A resumable multi-seed study with the project's own train.py."""


def _stop_on_signals(driver, hint):
    def on_signal(signum, _frame):
        click.echo("stopping (signal %d): children get SIGTERM; %s" % (signum, hint), err=True)
        driver.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


@cli.command()
@part_option
@click.option("--workers", type=int, default=None, metavar="INT", help="Runs at a time [default: the number of cores]")
@results_option
@workdir_option
@plan_option
@click.option("-n", "--dry-run", is_flag=True, help="Print the runs that would be trained and exit")
def run(parts, workers, results, workdir, plan, dry_run):
    """Train and evaluate every run not yet in the results file (stop it at any time; run it again to go on)."""
    study = _load_study(plan)
    names = _parts(study, parts)
    workers = _cores() if workers is None else workers
    if workers < 1:
        raise click.UsageError("--workers must be at least 1, got %d" % workers)
    results, workdir = _default(results, DEFAULT_RESULTS), _default(workdir, DEFAULT_WORKDIR)
    if os.path.isdir(results):
        raise click.UsageError("--results: %s is a folder; give a file (e.g. %s)" % (results, DEFAULT_RESULTS))
    _check_metrics(study)
    driver = study_runner.Driver(study, results, workdir, workers)
    tasks = study_runner.plan_tasks(study, names, workdir, driver.promotions)
    if dry_run:
        for task in tasks:
            if not driver.is_complete(task):
                click.echo(study_runner.study_runs.command_text(study_runner.study_runs.train_argv(
                    task.part, task.options, task.seed, study_runner.display_path(task.root), study.train_options)))
        return
    if driver.dirty:
        click.echo("warning: the checkout has uncommitted changes; they are recorded as dirty=true", err=True)

    _stop_on_signals(driver, "run again to continue")
    all_tasks = study_runner.plan_tasks(study, study.part_names(), workdir, driver.promotions)
    outcomes = driver.run(tasks, all_tasks)
    click.echo("finished: %s" % ", ".join("%s %d" % (k, v) for k, v in sorted(outcomes.items())))
    if driver.stopped:
        sys.exit(143)
    if driver.failures:
        failed = "\n  ".join(driver.failures)
        click.echo("%d run(s) failed (run again to retry):\n  %s" % (len(driver.failures), failed), err=True)
        sys.exit(1)


@cli.command()
@part_option
@results_option
@workdir_option
@plan_option
def status(parts, results, workdir, plan):
    """Print what is done and what is left."""
    study = _load_study(plan)
    names = _parts(study, parts)
    results, workdir = _default(results, DEFAULT_RESULTS), _default(workdir, DEFAULT_WORKDIR)
    records, bad = read_results(results)
    metric_lines, diverged, promotions = index_results(records)
    for line in study_status.status_lines(study, names, workdir, metric_lines, diverged, promotions):
        click.echo(line)
    if bad:
        click.echo("%d unreadable line(s) in %s are ignored" % (bad, results))


@cli.command()
@results_option
@plan_option
def promote(results, plan):
    """Record the sweep's best setting (the plan's rule) so that the main part runs it."""
    from experiments import study_promote  # statistics libraries load only for promote and report

    study = _load_study(plan)
    results = _default(results, DEFAULT_RESULTS)
    commit, dirty = study_runner.git_state()
    try:
        record = study_promote.promote(study, results, commit, dirty)
    except (ValueError, study_promote.NotReady) as exc:
        raise click.UsageError(str(exc))
    targets = record["target_parts"]
    click.echo("promoted %s (%s) into part(s) %s as %s; now run: python experiments/nda_study.py run %s"
               % (record["chosen_arm"], " ".join(record["options"]), ", ".join(targets), record["target_arm"],
                  " ".join("--part " + t for t in targets)))


@cli.command()
@click.argument("results_file", metavar="RESULTS")
@click.option("--out", metavar="DIR", help="Where the Markdown and PNGs go [default: the results file's folder]")
@click.option("--readme", metavar="FILE", help="Also rewrite the study block between the marker lines of this "
              "Markdown file (README.md): progress per part, each part's table, plots")
@plan_option
def report(results_file, out, readme, plan):
    """Write nda-study.md and the plots from a results file (the same file gives the same bytes)."""
    if not os.path.isfile(results_file):
        raise click.UsageError("RESULTS: %s is not a file; give a results file such as %s" % (results_file,
                                                                                              DEFAULT_RESULTS))
    out = out or os.path.dirname(os.path.abspath(results_file))
    if os.path.exists(out) and not os.path.isdir(out):
        raise click.UsageError("--out: %s is not a folder" % out)
    from experiments import study_readme, study_report

    study = _load_study(plan)
    if readme is not None:  # checked before anything is written
        if not os.path.isfile(readme):
            raise click.UsageError("--readme: %s is not a file" % readme)
        with open(readme, encoding="utf-8") as f:
            try:
                study_readme.replace_block(f.read(), "")
            except study_readme.MarkersMissing as exc:
                raise click.UsageError("--readme: %s %s" % (readme, exc))
    path = study_report.write_report(results_file, out, study=study)
    click.echo("wrote %s" % path)
    if readme is not None:
        changed = study_readme.update_readme(readme, results_file, study, out)
        click.echo("%s %s" % ("updated" if changed else "unchanged:", readme))


@cli.command()
@click.argument("results_file", metavar="RESULTS")
@click.option("--part", required=True, metavar="NAME", help="The run's part")
@click.option("--arm", required=True, metavar="NAME", help="The run's arm")
@click.option("--seed", required=True, type=int, metavar="INT", help="The run's seed")
@click.option("--kimg", type=float, metavar="K", help="Check only the snapshots up to kimg K, ending train.py once "
              "they are final [default: the whole run]")
@click.option("--noise-seeds", type=int, default=2, show_default=True, metavar="INT",
              help="Extra calc_metrics --seed values per snapshot that measure each metric's noise")
@click.option("--workdir", default=None, metavar="DIR",
              help="Where the rerun's folder goes [default: %s]" % DEFAULT_RERUN_WORKDIR)
def rerun(results_file, part, arm, seed, kimg, noise_seeds, workdir):
    """Retrain one run from scratch with its recorded command and check its recorded metrics (exit 1 when a
    value is outside the metric's own noise)."""
    from experiments import study_rerun
    from experiments.study_runs import run_root

    if not os.path.isfile(results_file):
        raise click.UsageError("RESULTS: %s is not a file; give a results file such as %s" % (results_file,
                                                                                              DEFAULT_RESULTS))
    if noise_seeds < 1:
        raise click.UsageError("--noise-seeds must be at least 1 (the noise is a spread over seeds), got %d"
                               % noise_seeds)
    records, _ = read_results(results_file)
    try:
        recorded = study_rerun.RecordedRun(records, part, arm, seed)
    except ValueError as exc:
        raise click.UsageError(str(exc))
    if kimg is not None and not any(k <= kimg for k in recorded.kimgs()):
        raise click.UsageError("--kimg: %s has recorded snapshots at kimg %s; give a K at or above the first of them"
                               % (recorded.label(), ", ".join(str(k) for k in recorded.kimgs())))
    parent = os.path.abspath(run_root(_default(workdir, DEFAULT_RERUN_WORKDIR), part, arm, seed))
    if _nested(parent, recorded.outdir()):
        raise click.UsageError("--workdir: the rerun's folder %s would share the recorded run's folder %s; "
                               "give another --workdir" % (parent, recorded.outdir()))
    try:
        root = study_rerun.fresh_folder(parent)
    except OSError as exc:
        raise click.UsageError("--workdir: cannot make a folder in %s (%s)" % (parent, exc.strerror or exc))
    driver = study_runner.Driver(None, os.path.abspath(results_file), parent, 1)
    _stop_on_signals(driver, "nothing was recorded")
    try:
        job = study_rerun.Rerun(recorded, driver, root, kimg=kimg, noise_seeds=noise_seeds)
        mismatches = job.execute()
    except (study_rerun.RerunFailed, ValueError) as exc:
        click.echo("rerun failed: %s" % exc, err=True)
        sys.exit(1)
    if mismatches is None:
        sys.exit(143)
    if mismatches:
        click.echo("NOT reproduced: %s" % "; ".join(mismatches), err=True)
        sys.exit(1)
    click.echo("reproduced: all %d values within the metric's own noise" % len(job.rows))


def _nested(a, b):
    """One of the two folders is inside the other (or they are the same)."""
    a, b = os.path.realpath(a), os.path.realpath(b)
    return os.path.commonpath([a, b]) in (a, b)


if __name__ == "__main__":
    cli()
