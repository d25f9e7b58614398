"""What is done and what is left, per part and arm, from the results file and the run folders."""

import os

from experiments import study_runs
from experiments.study_runner import plan_tasks, planned_keys, run_is_locked


def run_state(study, task, metric_lines, diverged):
    """A short word for one run: done, diverged, evaluating n/m, training at kimg K, stopped at kimg K, not started."""
    if task.key in diverged:
        return "diverged"
    keys = planned_keys(study, task)
    have = sum(1 for k in keys if k in metric_lines)
    if have == len(keys):
        return "done"
    root = task.root
    busy = run_is_locked(root)
    if study_runs.read_json(os.path.join(root, "trained.json")) is not None:
        return "%s %d/%d" % ("evaluating" if busy else "evaluated", have, len(keys))
    latest = study_runs.latest_snapshot(root)
    if latest is None:
        return "training" if busy else "not started"
    return "%s at kimg %d" % ("training" if busy else "stopped", latest[0])


def status_lines(study, part_names, workdir, metric_lines, diverged, promotions):
    lines, total, done = [], 0, 0
    for name in part_names:
        part = study.part(name)
        tasks = plan_tasks(study, [name], workdir, promotions)
        lines.append("part %s: %s; %d arms x %d seeds, %g kimg each, evaluated at kimg %s"
                     % (name, part.description, len({t.arm for t in tasks}), len(part.seeds), part.kimg,
                        " ".join(str(k) for k in part.eval_kimg)))
        for arm in dict.fromkeys(t.arm for t in tasks):
            states = {}
            for t in tasks:
                if t.arm == arm:
                    state = run_state(study, t, metric_lines, diverged)
                    states.setdefault(state, []).append(str(t.seed))
                    total += 1
                    done += state in ("done", "diverged")
            text = "; ".join("%s: seed %s" % (s, " ".join(seeds)) for s, seeds in states.items())
            lines.append("  %-18s %s" % (arm, text))
        pr = study.promotion
        if pr is not None and name in pr.target_parts and pr.source_part not in promotions:
            lines.append("  %-18s waits for `nda_study.py promote` (after part %s); %d more runs then"
                         % (pr.target_arm, pr.source_part, len(part.seeds)))
    lines.append("%d of %d runs finished, %d left" % (done, total, total - done))
    return lines
