"""What the rule fixed before the study says, computed from the results file and the plan.

The rule (README, "Does NDA help?"): a setting whose Frechet distance beats the baseline's with
both intervals excluding zero becomes the README's recommendation, and the default of the NDA
options only if it also beats the baseline in the limited-data part; otherwise the paper's
defaults stay. Here "a setting" is an arm of ``DefaultsRule.source_part`` that makes negatives
(the reweighting control makes none), judged at that part's last evaluated kimg over paired
seeds with study_stats' verdict (bootstrap and t-interval, at least MIN_PAIRED_SEEDS). When
several arms win, the recommendation is the one with the largest mean improvement (a tie-break
written down at sweep run 3 of 27, before the promoted setting was known).

The section says "provisional" until every planned run is finished and the sweep is promoted:
a verdict on part of the data is shown, never concluded.
"""

from dataclasses import dataclass

from experiments import study_report, study_stats
from experiments.study_plan import FD_METRIC, REPORT_KEYS
from experiments.study_results import index_results, read_results

OFF_SPECS = ("none", "off")


@dataclass(frozen=True)
class DefaultsRule:
    source_part: str = "main"
    confirm_part: str = "limited"
    metric: str = FD_METRIC


RULE = DefaultsRule()


@dataclass(frozen=True)
class Comparison:
    arm: str
    mean: float  # arm minus baseline, mean over paired seeds
    seeds: int
    wins: bool  # better, with both intervals excluding zero, over enough seeds


@dataclass(frozen=True)
class Verdict:
    complete: bool
    runs_left: int
    source_kimg: int
    winners: tuple  # Comparisons that win in the source part, best first
    recommended: object  # the best winner's arm name, or None
    options: tuple  # its train.py options
    confirmed: object  # Comparison of the recommended arm in the confirm part, or None (not run there)

    @property
    def default(self):
        return self.recommended is not None and self.confirmed is not None and self.confirmed.wins


def makes_negatives(options):
    """Whether an arm's train.py options switch NDA's negatives on."""
    for opt in options:
        if opt.startswith("--nda="):
            return opt.split("=", 1)[1].strip().lower() not in OFF_SPECS
    return False


def _fd_key():
    return next(rk for rk in REPORT_KEYS if rk.metric == RULE.metric and rk.key == RULE.metric)


def compare(data, arm, kimg, rk):
    """``Comparison`` of ``arm`` with the part's baseline at ``kimg`` (None without paired seeds)."""
    base, other = data.values(data.baseline, kimg, rk), data.values(arm, kimg, rk)
    diffs = [other[s] - base[s] for s in sorted(set(base) & set(other))]
    if not diffs:
        return None
    sign, (mean, _, _), _ = study_stats.excluded_side(diffs)
    return Comparison(arm, mean, len(diffs), sign == (-1 if rk.lower_is_better else 1))


def verdict_of_file(results_path, study):
    """:func:`verdict` of a results file."""
    records, _ = read_results(results_path)
    return verdict(study, *index_results(records))


def verdict(study, metrics, diverged, promotions):
    """The rule's outcome on the results so far (index_results' three indexes); None when the
    plan lacks the rule's parts."""
    from experiments.study_readme import runs_left
    from experiments.study_runner import arms_of

    names = study.part_names()
    if RULE.source_part not in names or RULE.confirm_part not in names:
        return None
    left = runs_left(study, metrics, diverged, promotions)
    parts = study_report.part_data(metrics, diverged)
    source = parts.get(RULE.source_part)
    if source is None or source.baseline is None or source.final_kimg is None:
        return Verdict(False, left, None, (), None, (), None)
    rk = _fd_key()
    options = dict(arms_of(study, study.part(RULE.source_part), promotions))
    comparisons = [compare(source, arm, source.final_kimg, rk) for arm in source.arms
                   if arm != source.baseline and makes_negatives(options.get(arm, ()))]
    winners = sorted((c for c in comparisons if c is not None and c.wins),
                     key=lambda c: c.mean if rk.lower_is_better else -c.mean)
    recommended = winners[0].arm if winners else None
    confirmed = None
    confirm = parts.get(RULE.confirm_part)
    if recommended is not None and confirm is not None and confirm.baseline is not None \
            and recommended in confirm.arms and confirm.final_kimg is not None:
        confirmed = compare(confirm, recommended, confirm.final_kimg, rk)
    return Verdict(left == 0, left, source.final_kimg, tuple(winners), recommended,
                   tuple(options.get(recommended, ())), confirmed)


def lines(v):
    """The verdict as Markdown lines (a heading, a status line, one bullet per step)."""
    if v is None:
        return []
    rk = _fd_key()
    out = ["#### What the rule fixed before the study says", ""]
    if v.complete:
        out += ["Every planned run is finished: this is the study's outcome.", ""]
    else:
        out += ["**Provisional**: %d planned run%s not finished yet; this is what the rule gives on the runs "
                "so far, not a conclusion." % (v.runs_left, " is" if v.runs_left == 1 else "s are"), ""]
    if v.source_kimg is None:
        return out + ["- No evaluated snapshot in part `%s` yet." % RULE.source_part, ""]
    fmt = rk.fmt
    wins = ", ".join("`%s` (mean difference %s over %d seeds)" % (c.arm, study_stats.format_number(fmt, c.mean), c.seeds)
                     for c in v.winners)
    out.append("- Part `%s`, %s at kimg %d: NDA arms that beat the baseline with both intervals excluding zero: %s."
               % (RULE.source_part, rk.label, v.source_kimg, wins or "none"))
    if v.recommended is None:
        out.append("- Recommendation: none; the paper's defaults stay (`jigsaw,stitch`, lambda 0.25, weighted).")
        return out + [""]
    out.append("- Recommendation (the winner with the largest mean improvement): `%s`, that is `%s`."
               % (v.recommended, " ".join(v.options)))
    c = v.confirmed
    if c is None:
        out.append("- Part `%s`: `%s` has no paired runs there yet, so it is not the default of the NDA options."
                   % (RULE.confirm_part, v.recommended))
    elif c.wins:
        out.append("- Part `%s`: `%s` beats the baseline there too (mean difference %s over %d seeds, both intervals exclude zero): "
                   "its settings %s the default of the NDA options."
                   % (RULE.confirm_part, v.recommended, study_stats.format_number(fmt, c.mean), c.seeds,
                      "are" if v.complete else "would be"))
    else:
        out.append("- Part `%s`: `%s` does not beat the baseline there with both intervals excluding zero (mean difference %s over %d "
                   "seeds): it stays a recommendation, and the paper's defaults stay the defaults."
                   % (RULE.confirm_part, v.recommended, study_stats.format_number(fmt, c.mean), c.seeds))
    return out + [""]
