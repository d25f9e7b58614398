"""From a results file to a Markdown report and PNG plots, byte for byte reproducible.

Only the file decides what is shown: every run in it appears (its own row in "Every run"), arms
are ordered by their place in the plan (recorded in each line), numbers have fixed formats,
statistics are deterministic (study_stats), and nothing depends on the clock.
"""

import math
import os

from experiments import study_plot, study_stats
from experiments.study_plan import REPORT_KEYS, RUN_KEYS
from experiments.study_results import index_results, read_results

RESULTS_TITLE = "NDA study: results"


def value_of(record, key):
    """A report key's value in a metric line (``mean_of:PREFIX``: mean of the keys with it)."""
    results = record.get("results") or {}
    if key.startswith("mean_of:"):
        prefix = key[len("mean_of:"):]
        values = [results[k] for k in sorted(results) if k.startswith(prefix) and _finite(results[k])]
        return sum(values) / len(values) if values else None
    value = results.get(key)
    return float(value) if _finite(value) else None


def run_value(facts, key):
    if key == "s_per_kimg":
        value = facts.get("s_per_kimg")
    elif key == "train_wall_min":
        wall = facts.get("train_wall_s")
        value = None if wall is None else wall / 60
    else:
        value = facts.get(key)
    return float(value) if _finite(value) else None


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(fmt, value):
    return study_stats.format_number(fmt, value)


def _fmt_ci(fmt, values):
    if not values:
        return "-"
    mean, low, high = study_stats.t_interval(values)
    if low is None:
        return "%s (1)" % _num(fmt, mean)
    return "%s ± %s (%d)" % (_num(fmt, mean), _num(fmt, high - mean), len(values))


class PartData:
    """The lines of one part, arranged by arm, seed and kimg."""

    def __init__(self, name, metric_lines, diverged):
        self.name = name
        self.lines = metric_lines  # {(arm, seed, kimg, metric): record}
        self.diverged = diverged  # {(arm, seed): record}
        order = {}
        baseline = None
        for record in list(metric_lines.values()) + list(diverged.values()):
            order.setdefault(record["arm"], (int(record.get("arm_index", 10 ** 6)), record["arm"]))
            baseline = baseline or record.get("baseline_arm")
        self.arms = sorted(order, key=lambda a: order[a])
        self.baseline = baseline if baseline in order else None
        self.kimgs = sorted({k for (_, _, k, _) in metric_lines})
        self.final_kimg = self.kimgs[-1] if self.kimgs else None
        self.metrics = {m for (_, _, _, m) in metric_lines}

    def seeds(self, arm):
        return sorted({s for (a, s, _, _) in self.lines if a == arm} | {s for (a, s) in self.diverged if a == arm})

    def values(self, arm, kimg, rk):
        """``{seed: value}`` of report key ``rk`` at ``kimg``."""
        out = {}
        for seed in self.seeds(arm):
            record = self.lines.get((arm, seed, kimg, rk.metric))
            if record is not None:
                value = value_of(record, rk.key)
                if value is not None:
                    out[seed] = value
        return out

    def facts(self, arm, seed):
        """The run's training facts (from any of its lines)."""
        for (a, s, _, _), record in sorted(self.lines.items()):
            if a == arm and s == seed:
                return record
        return self.diverged.get((arm, seed), {})

    def run_values(self, arm, rk):
        out = {}
        for seed in self.seeds(arm):
            if (arm, seed) in self.diverged:
                continue  # its time stops at the divergence: not comparable
            value = run_value(self.facts(arm, seed), rk.key)
            if value is not None:
                out[seed] = value
        return out

    def report_keys(self):
        return [rk for rk in REPORT_KEYS if rk.metric in self.metrics]


def plot_name(part, rk):
    slug = rk.key.replace("mean_of:", "mean-").rstrip("_")
    return "nda-study-%s-%s.png" % (part, slug)


def build_report(results_path, title=RESULTS_TITLE, study=None):
    """``(markdown text, {png file name: bytes})``; with the plan (``study``) the report also
    says what the rule fixed before the study gives (study_verdict)."""
    records, bad = read_results(results_path)
    metrics, diverged, promotions = index_results(records)
    parts = part_data(metrics, diverged)
    names = list(parts)

    runs = len({(p, a, s) for (p, a, s, _, _) in metrics} | set(diverged))
    out = ["# %s" % title, "",
           "Made by `python experiments/nda_study.py report %s` from %d result lines (%d runs)%s. "
           "Numbers are mean ± half-width of the 95%% t-interval over seeds, with the number of seeds in "
           "brackets; differences are per seed (arm minus baseline, same seed), with a percentile bootstrap "
           "interval (%d resamples, fixed seed) and, for comparison, the paired t-interval."
           % (os.path.basename(results_path), len(records), runs,
              "; %d unreadable line%s ignored" % (bad, "" if bad == 1 else "s") if bad else "",
              study_stats.BOOTSTRAP_SAMPLES), ""]
    images = {}
    if study is not None:
        from experiments import study_verdict  # late: it reads this module's PartData

        out += [line.replace("#### ", "## ", 1)
                for line in study_verdict.lines(study_verdict.verdict(study, metrics, diverged, promotions))]
    for name in names:
        out += _part_section(parts[name], images)
    if promotions:
        out += ["## Promotion of the sweep's best setting", ""]
        for source in sorted(promotions):
            out += _promotion_lines(promotions[source])
    return "\n".join(out).rstrip("\n") + "\n", images


_PART_RANK = {"main": 0, "limited": 1, "sweep": 2}


def part_data(metrics, diverged):
    """``{part name: PartData}`` in report order, from index_results' metric and diverged lines."""
    parts = {}
    for (part, arm, seed, kimg, metric), record in metrics.items():
        parts.setdefault(part, [{}, {}])[0][(arm, seed, kimg, metric)] = record
    for (part, arm, seed), record in diverged.items():
        parts.setdefault(part, [{}, {}])[1][(arm, seed)] = record
    names = sorted(parts, key=lambda p: (_PART_RANK.get(p, 99), p))
    return {name: PartData(name, *parts[name]) for name in names}


def _part_section(data, images):
    out = ["## Part `%s`" % data.name, ""]
    arms_text = ", ".join("`%s` (seeds %s)" % (a, " ".join(str(s) for s in data.seeds(a))) for a in data.arms)
    out += ["Arms: %s. Snapshots evaluated at kimg %s." % (arms_text, ", ".join(str(k) for k in data.kimgs)), ""]
    keys = data.report_keys()
    if data.final_kimg is None or not keys:
        out += ["No evaluated snapshot yet.", ""]
    else:
        out += arm_table(data, keys)
        out += difference_section(data, keys)
        out += plots(data, keys, images)
    out += _every_run(data, keys)
    return out


def arm_table(data, keys):
    k = data.final_kimg
    head = ["arm"] + ["%s%s" % (rk.label, " ↓" if rk.lower_is_better else " ↑") for rk in keys] + \
           [rk.label for rk in RUN_KEYS]
    out = ["### At kimg %d (↓ lower is better, ↑ higher is better)" % k, "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in data.arms:
        cells = [_fmt_ci(rk.fmt, [v for _, v in sorted(data.values(arm, k, rk).items())]) for rk in keys]
        cells += [_fmt_ci(rk.fmt, [v for _, v in sorted(data.run_values(arm, rk).items())]) for rk in RUN_KEYS]
        out.append("| `%s` | %s |" % (arm, " | ".join(cells)))
    return out + [""]


def _pairs(base, other):
    seeds = sorted(set(base) & set(other))
    return seeds, [other[s] - base[s] for s in seeds]


def difference_section(data, keys):
    if data.baseline is None or len(data.arms) < 2:
        return []
    k = data.final_kimg
    out = ["### Differences vs `%s` at kimg %d (arm minus baseline, paired by seed)" % (data.baseline, k), "",
           "| arm | number | mean difference | 95% bootstrap CI | 95% paired t CI | seeds better |",
           "|---|---|---|---|---|---|"]
    sentences = []
    for arm in data.arms:
        if arm == data.baseline:
            continue
        compared = [(rk, data.values(data.baseline, k, rk), data.values(arm, k, rk)) for rk in keys]
        compared += [(rk, data.run_values(data.baseline, rk), data.run_values(arm, rk)) for rk in RUN_KEYS]
        for rk, base, other in compared:
            _, diffs = _pairs(base, other)
            if not diffs:
                continue
            mean, low, high = study_stats.paired_bootstrap(diffs)
            _, tlow, thigh = study_stats.t_interval(diffs)
            better = sum(1 for d in diffs if (d < 0 if rk.lower_is_better else d > 0))
            ci = "-" if low is None else "%s to %s" % (_num(rk.fmt, low), _num(rk.fmt, high))
            tci = "-" if tlow is None else "%s to %s" % (_num(rk.fmt, tlow), _num(rk.fmt, thigh))
            out.append("| `%s` | %s | %s | %s | %s | %d of %d |" % (arm, rk.label, _num(rk.fmt, mean), ci, tci, better,
                                                                    len(diffs)))
            sentences.append("- " + study_stats.verdict("`%s`" % arm, "`%s`" % data.baseline, rk.label, rk.fmt,
                                                        rk.lower_is_better, diffs))
    return out + [""] + sentences + [""]


def plots(data, keys, images):
    out = []
    if len(data.kimgs) < 1:
        return out
    for rk in keys:
        series = []
        for arm in data.arms:
            pts = []
            for k in data.kimgs:
                values = [v for _, v in sorted(data.values(arm, k, rk).items())]
                if values:
                    mean, low, high = study_stats.t_interval(values)
                    pts.append((k, mean, low, high))
            if pts:
                series.append(("%s (%d)" % (arm, len(data.seeds(arm))), pts))
        if not series:
            continue
        name = plot_name(data.name, rk)
        images[name] = study_plot.band_plot(series, "%s: %s" % (data.name, rk.label), "kimg",
                                            "mean, 95%% t-band over seeds; %s is better"
                                            % ("lower" if rk.lower_is_better else "higher"))
        out.append("![%s: %s vs kimg per arm, mean with a 95%% band](%s)" % (data.name, rk.label, name))
    return out + [""] if out else out


def _every_run(data, keys):
    head = ["arm", "seed", "kimg evaluated"] + ["%s @%s" % (rk.label, data.final_kimg) for rk in keys] + \
           [rk.label for rk in RUN_KEYS] + ["segments", "commit", "note"]
    out = ["### Every run", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in data.arms:
        for seed in data.seeds(arm):
            kimgs = sorted({k for (a, s, k, _) in data.lines if a == arm and s == seed})
            facts = data.facts(arm, seed)
            cells = ["`%s`" % arm, str(seed), " ".join(str(k) for k in kimgs) or "-"]
            for rk in keys:
                value = data.values(arm, data.final_kimg, rk).get(seed)
                cells.append("-" if value is None else _num(rk.fmt, value))
            for rk in RUN_KEYS:
                value = run_value(facts, rk.key)
                cells.append("-" if value is None else _num(rk.fmt, value))
            cells.append(str(facts.get("segments", "-")))
            commits = facts.get("train_commits") or [facts.get("commit")]
            cells.append(" ".join(str(c)[:10] for c in commits if c) or "-")
            note = []
            if (arm, seed) in data.diverged:
                note.append("diverged: %s" % data.diverged[(arm, seed)].get("message", "").replace("|", "/"))
            if facts.get("dirty"):
                note.append("uncommitted changes")
            cells.append("; ".join(note) or "")
            out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def _promotion_lines(record):
    means = record.get("means") or {}
    table = ", ".join("`%s` %s" % (arm, "-" if means[arm] is None else "%.2f" % means[arm]) for arm in sorted(means))
    targets = record.get("target_parts") or []
    return ["Chosen from part `%s`: `%s` (options `%s`), entering part%s %s as `%s`. Rule: %s Means: %s." % (
        record.get("source_part"), record.get("chosen_arm"), " ".join(record.get("options") or []),
        "s" if len(targets) > 1 else "", " and ".join("`%s`" % t for t in targets), record.get("target_arm"),
        record.get("rule", ""), table), ""]


def write_report(results_path, out_dir, markdown_name="nda-study.md", study=None):
    """Write the Markdown and the PNGs into ``out_dir`` (each file atomically); returns the
    Markdown's path."""
    from nda_stylegan.fileio import atomic_write

    text, images = build_report(results_path, study=study)
    os.makedirs(out_dir, exist_ok=True)
    for name, data in sorted(images.items()):
        with atomic_write(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    path = os.path.join(out_dir, markdown_name)
    with atomic_write(path, "w") as f:
        f.write(text)
    return path
