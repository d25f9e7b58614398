"""The README's view of the study: a block between two marker lines, rewritten by ``report --readme``.

The block holds how far each part of the plan is, what the rule fixed before the study gives
(study_verdict), and per part the table at the last evaluated kimg, the sentences for the
Frechet distance and the plots (images from the report's folder).
Like the report it depends only on the results file and the plan, so the same file gives the same
bytes; the text around the markers (the conclusion, written by people) is never touched.
"""

import os

from experiments import study_report, study_verdict
from experiments.study_plan import FD_METRIC
from experiments.study_results import index_results, read_results

BEGIN = "<!-- nda-study-report: made by `nda_study.py report --readme`; edits inside are overwritten -->"
END = "<!-- /nda-study-report -->"


class MarkersMissing(ValueError):
    """The file has no (or more than one) pair of the block's marker lines."""


def planned_runs(study, part, promotions):
    """``[(arm, seed)]`` the plan gives the part (with the promoted arm once it is recorded)."""
    from experiments.study_runner import arms_of

    return [(arm, seed) for seed in part.seeds for arm, _ in arms_of(study, part, promotions)]


def finished(study, part, arm, seed, metrics, diverged):
    """Every planned (kimg, metric) line is in the file, or the run diverged."""
    if (part.name, arm, seed) in diverged:
        return True
    return all((part.name, arm, seed, k, m.name) in metrics for k in part.eval_kimg for m in study.metrics)


def part_progress(study, metrics, diverged, promotions):
    """``[(part name, finished runs, planned runs)]``, then the runs still waiting for the
    promotion (0 once it is recorded, or without one)."""
    counts = []
    for part in study.parts:
        runs = planned_runs(study, part, promotions)
        done = sum(1 for arm, seed in runs if finished(study, part, arm, seed, metrics, diverged))
        counts.append((part.name, done, len(runs)))
    pr = study.promotion
    waiting = 0
    if pr is not None and pr.source_part not in promotions:
        waiting = sum(len(study.part(t).seeds) for t in pr.target_parts)
    return counts, waiting


def runs_left(study, metrics, diverged, promotions):
    counts, waiting = part_progress(study, metrics, diverged, promotions)
    return sum(planned - done for _, done, planned in counts) + waiting


def progress_line(study, metrics, diverged, promotions):
    counts, waiting = part_progress(study, metrics, diverged, promotions)
    text = ", ".join("`%s` %d of %d runs" % c for c in counts)
    if waiting:
        pr = study.promotion
        text += (" (%s get%s the arm `%s` once part `%s` is finished and promoted: %d more runs)"
                 % (" and ".join("`%s`" % t for t in pr.target_parts), "" if len(pr.target_parts) > 1 else "s",
                    pr.target_arm, pr.source_part, waiting))
    return "Finished so far: %s." % text


def block(results_path, study, image_dir):
    """The block's Markdown (markers included); ``image_dir``: the report's folder as the README
    links it (relative to the README)."""
    records, _ = read_results(results_path)
    metrics, diverged, promotions = index_results(records)
    out = [BEGIN, "", progress_line(study, metrics, diverged, promotions), ""]
    report_md = "/".join([image_dir, "nda-study.md"]) if image_dir else "nda-study.md"
    out += ["The whole report, with every run and every comparison: [`%s`](%s)." % (report_md, report_md), ""]
    out += study_verdict.lines(study_verdict.verdict(study, metrics, diverged, promotions))
    for name, data in study_report.part_data(metrics, diverged).items():
        keys = data.report_keys()
        out += ["#### Part `%s`" % name, ""]
        if data.final_kimg is None or not keys:
            out += ["No evaluated snapshot yet.", ""]
            continue
        table = study_report.arm_table(data, keys)
        out += ["At kimg %d; mean ± half-width of the 95%% t-interval over seeds (seeds in brackets)." % data.final_kimg,
                ""] + table[2:]
        sentences = [line for line in study_report.difference_section(data, keys)
                     if line.startswith("- ") and _is_fd_sentence(line, keys)]
        out += sentences + ([""] if sentences else [])
        images = {}
        for line in study_report.plots(data, [rk for rk in keys if rk.metric == FD_METRIC
                                              or rk.key == "nda_auroc_neg_jigsaw"], images):
            out.append(_relink(line, image_dir) if line else line)
        if out[-1] != "":
            out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def _is_fd_sentence(line, keys):
    labels = [rk.label for rk in keys if rk.metric == FD_METRIC]
    return any(", %s:" % label in line for label in labels)


def _relink(line, image_dir):
    """``![alt](name.png)`` -> ``![alt](image_dir/name.png)``."""
    if not image_dir or not line.startswith("![") or not line.endswith(")"):
        return line
    alt, name = line[:-1].split("](", 1)
    return "%s](%s/%s)" % (alt, image_dir, name)


def replace_block(text, new_block):
    """``text`` with its marked block replaced by ``new_block``; MarkersMissing when the markers
    are not there exactly once, in order, each on a line of its own."""
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.rstrip("\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise MarkersMissing("needs the marker lines %s and %s, once each and in that order (found %d and %d)"
                             % (BEGIN, END, len(begins), len(ends)))
    return "".join(lines[:begins[0]]) + new_block + "".join(lines[ends[0] + 1:])


def update_readme(readme_path, results_path, study, report_dir):
    """Rewrite the block in ``readme_path`` (atomically); returns whether the file changed."""
    from nda_stylegan.fileio import atomic_write

    with open(readme_path, encoding="utf-8") as f:
        text = f.read()
    image_dir = os.path.relpath(os.path.abspath(report_dir), os.path.dirname(os.path.abspath(readme_path)))
    image_dir = "" if image_dir == "." else image_dir.replace(os.sep, "/")
    new = replace_block(text, block(results_path, study, image_dir))
    if new == text:
        return False
    with atomic_write(readme_path, "w", encoding="utf-8") as f:
        f.write(new)
    return True
