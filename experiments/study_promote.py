"""The recorded step that moves the sweep's best setting into the main table.

The rule is the plan's (study_plan.Promotion), fixed before the sweep ran; this module only
applies it, and only once every sweep run has the number it needs. The choice, the rule and
every arm's mean are appended to the results file, so the report shows how it was made.
"""

from experiments import study_report
from experiments.study_results import append_record, index_results, read_results


class NotReady(Exception):
    pass


def choose(study, metric_lines):
    """``(chosen arm, options, {arm: mean})`` by the plan's rule; NotReady while runs are missing."""
    pr = study.promotion
    part = study.part(pr.source_part)
    means, missing = {}, []
    for arm, _ in part.arms:
        if arm == part.baseline:
            continue
        values = []
        for seed in part.seeds:
            record = metric_lines.get((part.name, arm, seed, pr.kimg, pr.metric))
            value = None if record is None else study_report.value_of(record, pr.key)
            if value is None:
                missing.append("%s seed %d" % (arm, seed))
            else:
                values.append(value)
        means[arm] = sum(values) / len(values) if values else None
    if missing:
        raise NotReady("the sweep is not finished: %d run(s) lack %s at kimg %d (e.g. %s); run "
                       "`nda_study.py run --part %s` first" % (len(missing), pr.key, pr.kimg, missing[0], part.name))
    order = [arm for arm, _ in part.arms if arm in means]
    chosen = min(order, key=lambda arm: (means[arm], order.index(arm)))  # ties: the first in the table
    return chosen, dict(part.arms)[chosen], means


def promote(study, results_path, commit, dirty):
    """Append the promotion line; returns it. ValueError if one exists, NotReady if too early."""
    pr = study.promotion
    if pr is None:
        raise ValueError("this plan has no promotion step")
    records, _ = read_results(results_path)
    metric_lines, _, promotions = index_results(records)
    if pr.source_part in promotions:
        done = promotions[pr.source_part]
        raise ValueError("the sweep's best setting was already promoted (%s as %s); a promotion is made once"
                         % (done.get("chosen_arm"), done.get("target_arm")))
    chosen, options, means = choose(study, metric_lines)
    part = study.part(pr.source_part)
    record = dict(type="promotion", source_part=pr.source_part, target_parts=list(pr.target_parts),
                  target_arm=pr.target_arm, chosen_arm=chosen, options=list(part.options) + list(options),
                  metric=pr.metric, key=pr.key, kimg=pr.kimg, means=means, seeds=list(part.seeds),
                  rule="the lowest mean %s at kimg %d over seeds %s among the arms other than %s (ties: the first "
                       "in the table), fixed in the plan before the sweep ran."
                       % (pr.key, pr.kimg, " ".join(str(s) for s in part.seeds), part.baseline),
                  commit=commit, dirty=dirty)
    append_record(results_path, record)
    return record
