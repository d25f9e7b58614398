"""The NDA study's plan: every arm, seed, budget and metric, declared here before any run.

Each arm is a list of ``train.py`` options. A run is ``(part, arm, seed)`` and is trained with

    python train.py --outdir <workdir>/<part>/<arm>/seed<seed> --seed <seed> --kimg <kimg> --snap <snap>
                    <TRAIN_OPTIONS> <part options> <arm options>

then each snapshot in ``eval_kimg`` is scored with every metric of ``METRICS`` through
``calc_metrics.py --seed EVAL_SEED``. Nothing here may change after the runs it governs have
started (the driver refuses a run whose recorded options differ from the plan); a change made
anyway must be written down in the README.
"""

from dataclasses import dataclass, field
from typing import Optional, Tuple

# ------------------------------------------------------------------------------------ the table
# Common to every run: the `cpu` preset (batch 16, 2 kimg per tick), no metrics at training time
# (the driver evaluates snapshots itself, so a metric failure never costs a training run).
TRAIN_OPTIONS = ("--cfg=cpu", "--metrics=none")
KIMG = 50
SNAP_TICKS = 5  # cpu preset: 2 kimg per tick, so snapshots at kimg 0, 10, 20, 30, 40, 50
EVAL_KIMG = (10, 20, 30, 40, 50)
MAIN_SEEDS = (0, 1, 2, 3, 4)
SWEEP_SEEDS = (100, 101, 102)  # disjoint from MAIN_SEEDS: the promoted setting is then judged on fresh seeds
EVAL_SEED = 0  # calc_metrics --seed: every snapshot is scored on the same latents (paired comparisons)

# The offline Frechet distance in EfficientNet-Lite0 features (10k generated vs the full data).
FD_METRIC = "fdl0_10k_full"

NDA = ("--nda=jigsaw,stitch",)
LAMBDA = "--nda-lambda=0.25"  # the paper's


@dataclass(frozen=True)
class Metric:
    name: str  # calc_metrics.py --metrics NAME
    options: Tuple[str, ...] = ()  # its sample counts; measured cost on 2 shared cores in the comment


METRICS = (
    Metric(FD_METRIC),  # its own default counts (10k generated)
    Metric("swd", ("--num-images=2048",)),  # ~40 s a snapshot (16384, the default, took 6.5 min)
    Metric("nda_auroc", ("--num-images=1000",)),  # ~25 s a snapshot with all 13 sets
)


@dataclass(frozen=True)
class ReportKey:
    """One number the report shows: a result key of a metric (``mean_of:PREFIX`` averages
    every result key starting with PREFIX), what it is called, which way is better, its format."""
    metric: str
    key: str
    label: str
    lower_is_better: bool
    fmt: str


REPORT_KEYS = (
    ReportKey(FD_METRIC, FD_METRIC, "Frechet distance (EfficientNet-Lite0)", True, "%.2f"),
    ReportKey("swd", "swd_avg", "SWD x1e3", True, "%.2f"),
    # Every arm's nda_auroc scores jigsaw (the run's own spec or the default one includes it),
    # so this key and the corruption mean compare across arms; nda_auroc_mean does not.
    ReportKey("nda_auroc", "nda_auroc_neg_jigsaw", "AUROC real vs jigsaw", False, "%.4f"),
    ReportKey("nda_auroc", "mean_of:nda_auroc_corrupt_", "AUROC real vs corruptions (mean)", False, "%.4f"),
)
# Per-run costs (not per snapshot), from the trainer's own stats.jsonl.
RUN_KEYS = (
    ReportKey("run", "s_per_kimg", "s/kimg", True, "%.2f"),
    # train.py's CPU seconds (one thread) per kimg: unlike s/kimg, it hardly depends on the load
    # of the shared cores. Recorded from 2026-12-04 on (runs started before have none).
    ReportKey("run", "cpu_s_per_kimg", "CPU s/kimg", True, "%.2f"),
    ReportKey("run", "train_wall_min", "training wall time (min)", True, "%.1f"),
)


@dataclass(frozen=True)
class Part:
    name: str
    description: str
    seeds: Tuple[int, ...]
    arms: Tuple[Tuple[str, Tuple[str, ...]], ...]  # (name, train.py options), in report order
    options: Tuple[str, ...] = ()  # train.py options of every arm of this part
    kimg: float = KIMG
    snap: int = SNAP_TICKS
    eval_kimg: Tuple[int, ...] = EVAL_KIMG
    baseline: str = "baseline"

    def arm_names(self):
        return [name for name, _ in self.arms]


def _sweep_arms():
    arms = [("baseline", ())]
    for start in (0, 10):
        for lam in ("0.1", "0.25", "0.5", "0.75"):
            name = "lambda%s-start%d" % (lam, start)
            opts = NDA + ("--nda-mode=weighted", "--nda-lambda=" + lam)
            if start:
                opts += ("--nda-start-kimg=%d" % start,)
            arms.append((name, opts))
    return tuple(arms)


PARTS = (
    Part("main", "built-in faces, all 50k images", MAIN_SEEDS, (
        ("baseline", ()),
        ("nda-weighted", NDA + ("--nda-mode=weighted", LAMBDA)),
        # G's fake term scaled by lambda exactly as in weighted mode, no negatives: separates
        # the effect of the negatives from that of down-weighting the fakes.
        ("reweight-only", ("--nda-mode=reweight", LAMBDA)),
        ("nda-mixture", NDA + ("--nda-mode=mixture", LAMBDA)),
        ("nda-jigsaw", ("--nda=jigsaw", "--nda-mode=weighted", LAMBDA)),
    )),
    # ADA's setting, where D overfits: the same seed picks the same 2000 images in every arm.
    Part("limited", "built-in faces, 2000 images (--subset 2000)", MAIN_SEEDS, (
        ("baseline", ()),
        ("nda-weighted", NDA + ("--nda-mode=weighted", LAMBDA)),
        ("nda-mixture", NDA + ("--nda-mode=mixture", LAMBDA)),
        # Added at 26 of 67 runs, after the main part's numbers were seen (recorded in the
        # README): jigsaw alone won there, and a default needs its winner tested here too.
        ("nda-jigsaw", ("--nda=jigsaw", "--nda-mode=weighted", LAMBDA)),
    ), options=("--subset=2000",)),
    # lambda x NDA start; a baseline on the same seeds gives the sweep its own paired comparisons.
    Part("sweep", "jigsaw,stitch weighted: lambda x NDA start (kimg 0 or 10)", SWEEP_SEEDS, _sweep_arms()),
)


@dataclass(frozen=True)
class Promotion:
    """The recorded step that moves the sweep's best setting into the main table.

    Rule, fixed before the sweep ran: among the sweep's arms other than its baseline, the one
    with the lowest mean ``key`` at ``kimg`` over all its seeds (ties: the first in table
    order). It is allowed only when every sweep run has that number. The choice is appended to
    the results file; each target part then runs it as ``target_arm`` on its own seeds (the
    limited-data part too, added before the sweep ran: a default must hold there as well)."""
    source_part: str = "sweep"
    target_parts: Tuple[str, ...] = ("main", "limited")
    target_arm: str = "sweep-best"
    metric: str = FD_METRIC
    key: str = FD_METRIC
    kimg: int = KIMG


PROMOTION = Promotion()


@dataclass(frozen=True)
class Study:
    parts: Tuple[Part, ...]
    metrics: Tuple[Metric, ...]
    train_options: Tuple[str, ...] = TRAIN_OPTIONS
    eval_seed: int = EVAL_SEED
    promotion: Optional[Promotion] = PROMOTION
    report_keys: Tuple[ReportKey, ...] = field(default=REPORT_KEYS)

    def part(self, name):
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(name)

    def part_names(self):
        return [p.name for p in self.parts]


STUDY = Study(PARTS, METRICS)


# ------------------------------------------------------------------------- plans from a file
def _strings(value, where):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("%s must be a list of strings" % where)
    return tuple(value)


def study_from_dict(data):
    """A Study from plain JSON data (``--plan FILE``: a study of one's own, or a tiny test).

    Same fields as the classes above; ``arms`` is a list of ``[name, [options]]``;
    ``promotion`` is absent (no promotion step) unless given as a dict of Promotion's fields."""
    if not isinstance(data, dict) or not isinstance(data.get("parts"), dict) or not data["parts"]:
        raise ValueError("the plan needs a 'parts' object with at least one part")
    parts = []
    for name, p in data["parts"].items():
        where = "parts.%s" % name
        if not isinstance(p, dict):
            raise ValueError("%s must be an object" % where)
        try:
            arms = tuple((str(a), _strings(o, "%s.arms.%s" % (where, a))) for a, o in p["arms"])
            seeds = tuple(int(s) for s in p["seeds"])
            part = Part(name, str(p.get("description", "")), seeds, arms,
                        options=_strings(p.get("options", []), where + ".options"),
                        kimg=float(p["kimg"]), snap=int(p["snap"]),
                        eval_kimg=tuple(int(k) for k in p["eval_kimg"]), baseline=str(p.get("baseline", "baseline")))
        except (KeyError, TypeError) as exc:
            raise ValueError("%s: missing or malformed field %s (needs arms, seeds, kimg, snap, eval_kimg)"
                             % (where, exc))
        parts.append(part)
    metrics = tuple(Metric(str(m["name"]), _strings(m.get("options", []), "metrics.options"))
                    for m in data.get("metrics", []))
    promotion = None
    if data.get("promotion"):
        fields = dict(data["promotion"])
        if "target_parts" in fields:
            fields["target_parts"] = _strings(fields["target_parts"], "promotion.target_parts")
        try:
            promotion = Promotion(**fields)
        except TypeError as exc:
            raise ValueError("promotion: %s" % exc)
    study = Study(tuple(parts), metrics, train_options=_strings(data.get("train_options", list(TRAIN_OPTIONS)),
                                                                "train_options"),
                  eval_seed=int(data.get("eval_seed", EVAL_SEED)), promotion=promotion)
    check_study(study)
    return study


def check_study(study):
    """One-line ValueError for a plan the driver cannot run as written."""
    names = study.part_names()
    if len(set(names)) != len(names):
        raise ValueError("part names must be unique, got %s" % ", ".join(names))
    for part in study.parts:
        arms = part.arm_names()
        if len(set(arms)) != len(arms) or not arms:
            raise ValueError("part %s: arm names must be unique and at least one, got %s" % (part.name, arms))
        if part.baseline not in arms:
            raise ValueError("part %s: its baseline arm %r is not among its arms" % (part.name, part.baseline))
        if len(set(part.seeds)) != len(part.seeds) or not part.seeds:
            raise ValueError("part %s: seeds must be unique and at least one" % part.name)
        if not part.kimg > 0 or part.snap < 1:
            raise ValueError("part %s: kimg must be > 0 and snap >= 1" % part.name)
        for k in part.eval_kimg:
            if not 0 <= k <= part.kimg:
                raise ValueError("part %s: eval_kimg %d is outside 0..%g" % (part.name, k, part.kimg))
        for arm in arms:
            if "/" in arm or arm.startswith("."):
                raise ValueError("part %s: arm name %r cannot be a folder name" % (part.name, arm))
    if study.promotion is not None:
        pr = study.promotion
        missing = [p for p in (pr.source_part,) + tuple(pr.target_parts) if p not in names]
        if missing or not pr.target_parts:
            raise ValueError("promotion: its source part and at least one target part must be in the plan "
                             "(not found: %s)" % (", ".join(missing) or "no target part"))
        for target in pr.target_parts:
            if pr.target_arm in study.part(target).arm_names():
                raise ValueError("promotion: arm %r already exists in part %s" % (pr.target_arm, target))


check_study(STUDY)
