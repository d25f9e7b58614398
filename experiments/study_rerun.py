"""Rerun one run of the study from scratch and check that it reproduces its recorded metrics.

The rerun trains with the run's recorded ``train.py`` command in a folder of its own (only
``--outdir`` changes), scores each recorded snapshot with the recorded ``calc_metrics.py`` command
(only ``--network`` changes) and compares the numbers. Asked to check only the snapshots up to
some kimg, it ends the trainer once they are final (a tick past the next whole kimg), rather than
changing ``--kimg``: train.py's ticks start after the first batch, so a snapshot "at kimg 10" holds
10016 images at batch 16, and a run told ``--kimg 10`` would stop 16 images short of it.

"Within the metric's own noise" is defined here and nowhere else (``noise_tolerance``): a metric
of one fixed network still moves with ``calc_metrics.py --seed`` (other latents, other real images
and patches). The rerun's snapshot is scored with the recorded seed and with ``noise_seeds`` more
seeds; ``s`` is the standard deviation of those values. Two evaluations on independent seeds
differ by about N(0, 2 s^2), so the rerun reproduces a value when ``|recorded - rerun| <= 2 sqrt(2) s``
(about 95% of such pairs fall inside). The rerun uses the recorded seed, so an honest rerun is
closer than that; when training is deterministic (the same torch build, one thread, as the driver
runs it) it is equal bit for bit, which the rerun shows by comparing its networks with the
recorded snapshot whenever that file is still on disk.
"""

import math
import os
import shlex
import statistics
import threading
import time

from experiments import study_runs
from experiments.study_results import index_results
from experiments.study_runner import DIVERGED_MARK, REPO, display_path, format_duration, git_state, metric_result

NOISE_FACTOR = 2 * math.sqrt(2)


class RerunFailed(Exception):
    """The rerun could not produce a number to compare (the reason is one line)."""


def noise_tolerance(values):
    """The largest difference from a recorded value that is still the metric's own noise: 2 sqrt(2)
    times the standard deviation of one network's values over evaluation seeds."""
    return NOISE_FACTOR * statistics.stdev(values)


def within_noise(recorded, rerun, tolerance):
    if recorded == rerun or (math.isnan(recorded) and math.isnan(rerun)):
        return True  # also equal infinities, whose difference is NaN
    return abs(recorded - rerun) <= tolerance


# ------------------------------------------------------------------------- recorded commands
def option_value(argv, name):
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv``, or None."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def with_option(argv, name, value):
    """``argv`` with the value of option ``name`` replaced (it must be there: only that one changes)."""
    out, found, i = [], False, 0
    while i < len(argv):
        arg = argv[i]
        if arg == name and i + 1 < len(argv):
            out += [name, value]
            found, i = True, i + 2
        elif arg.startswith(name + "="):
            out.append(name + "=" + value)
            found, i = True, i + 1
        else:
            out.append(arg)
            i += 1
    if not found:
        raise ValueError("the recorded command has no %s option: %s" % (name, shlex.join(argv)))
    return out


def rerun_train_argv(train_command, outdir):
    """The recorded train command with another ``--outdir``."""
    return with_option(shlex.split(train_command), "--outdir", outdir)


def repo_path(path):
    """A recorded path: relative ones are relative to the repository (the driver's working folder)."""
    return path if os.path.isabs(path) else os.path.join(REPO, path)


# ------------------------------------------------------------------------- the recorded run
class RecordedRun:
    """The metric lines of one run ``(part, arm, seed)`` in a results file, in kimg order."""

    def __init__(self, records, part, arm, seed):
        metric_lines, diverged, _ = index_results(records)
        key = (part, arm, seed)
        self.key = key
        self.lines = sorted((r for k, r in metric_lines.items() if k[:3] == key), key=lambda r: int(r["kimg"]))
        if not self.lines:
            runs = sorted({k[:3] for k in metric_lines})
            have = ", ".join("%s/%s seed %d" % r for r in runs[:8]) + (", ..." if len(runs) > 8 else "")
            raise ValueError("no metric line of %s/%s seed %d in the results file; it has %s"
                             % (part, arm, seed, have or "no metric lines at all"))
        commands = {r.get("train_command") for r in self.lines}
        if len(commands) != 1 or None in commands:
            raise ValueError("the lines of %s/%s seed %d do not share one recorded train_command; cannot rerun it"
                             % key)
        self.train_command = commands.pop()
        argv = shlex.split(self.train_command)
        if option_value(argv, "--outdir") is None or option_value(argv, "--kimg") is None:
            raise ValueError("the recorded train command of %s/%s seed %d has no --outdir or --kimg: %s"
                             % (key + (self.train_command,)))
        self.diverged = diverged.get(key)
        for name in ("eval_command", "snapshot"):
            if any(not isinstance(r.get(name), str) for r in self.lines):
                raise ValueError("a line of %s/%s seed %d has no recorded %s; cannot rerun it" % (key + (name,)))

    def label(self):
        return "%s/%s seed %d" % self.key

    def kimgs(self):
        return sorted({int(r["kimg"]) for r in self.lines})

    def recorded_kimg(self):
        return float(option_value(shlex.split(self.train_command), "--kimg"))

    def outdir(self):
        return repo_path(option_value(shlex.split(self.train_command), "--outdir"))


# ------------------------------------------------------------------------- the rerun
def fresh_folder(parent):
    """``parent/rerun-NNN``, the first number not taken: every rerun starts from an empty folder."""
    os.makedirs(parent, exist_ok=True)
    for n in range(1, 1000):
        path = os.path.join(parent, "rerun-%03d" % n)
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise RerunFailed("no free rerun-NNN folder in %s" % parent)


class Rerun:
    """Retrain ``run`` into the empty folder ``root`` and score its snapshots; ``driver`` (a
    study_runner.Driver) runs the subprocesses with the study's environment (one torch thread
    each, as the study ran them) and prints."""

    HEADER = ("kimg", "metric", "key", "recorded", "rerun", "difference", "noise SD", "tolerance", "verdict")

    def __init__(self, run, driver, root, kimg=None, noise_seeds=2):
        self.run, self.driver, self.root = run, driver, root
        self.noise_seeds = noise_seeds
        self.lines = [r for r in run.lines if kimg is None or int(r["kimg"]) <= kimg]
        self.train_argv = rerun_train_argv(run.train_command, display_path(root))
        last = max(int(r["kimg"]) for r in self.lines)
        # Snapshots named `last` are final once a tick has reached kimg last + 1.
        self.stop_at = last + 1 if kimg is not None and last + 1 <= run.recorded_kimg() else None
        self.mismatches = []  # what was not reproduced, one line each
        self.rows = []  # the table: one row per recorded number

    def say(self, line):
        self.driver.say(line)

    def execute(self):
        """Train, compare, print the table; returns the list of what was not reproduced (None when stopped)."""
        kimgs = sorted({int(r["kimg"]) for r in self.lines})
        self.say("rerun of %s: snapshot(s) at kimg %s; %d metric line(s)"
                 % (self.run.label(), ", ".join(map(str, kimgs)), len(self.lines)))
        self.say("recorded: %s" % self.run.train_command)
        self.say("rerun:    %s" % study_runs.command_text(self.train_argv))
        self._say_commits()
        snaps = self._train()
        if snaps is None:
            return None
        for kimg in kimgs:
            if kimg in snaps:
                recorded = [r["snapshot"] for r in self.lines if int(r["kimg"]) == kimg][0]
                self.say(network_sentence(kimg, repo_path(recorded), snaps[kimg]))
            else:
                self.mismatches.append("the rerun wrote no snapshot at kimg %d" % kimg)
        for line in self.lines:
            if int(line["kimg"]) in snaps:
                values = self._evaluate(line, snaps[int(line["kimg"])])
                if values is None:
                    return None
                self._compare(line, values)
        self.say("noise: tolerance = 2*sqrt(2) x the SD of each value over calc_metrics --seed S, S+1..S+%d "
                 "(S: the recorded seed) on the rerun's snapshot" % self.noise_seeds)
        for text in table([self.HEADER] + self.rows):
            self.say(text)
        outside = sum(1 for row in self.rows if row[-1] != "ok")
        if outside:
            self.mismatches.insert(0, "%d of %d values outside the metric's own noise" % (outside, len(self.rows)))
        return self.mismatches

    def _say_commits(self):
        commit, dirty = git_state()
        recorded = []
        for r in self.run.lines:
            for c in list(r.get("train_commits") or []) + [r.get("commit")]:
                if c and c not in recorded:
                    recorded.append(c)
        recorded_dirty = any(r.get("dirty") for r in self.run.lines)
        same = recorded == [commit] and not dirty and not recorded_dirty
        self.say("code: recorded at %s%s; this checkout %s%s%s"
                 % (", ".join(c[:12] for c in recorded) or "an unknown commit",
                    " with uncommitted changes" if recorded_dirty else "", commit[:12],
                    " with uncommitted changes" if dirty else "",
                    "" if same else " (not the same code: a difference may come from the code, not from noise)"))

    def _train(self):
        """Run train.py (ended early once ``stop_at`` is reached); ``{kimg: path of .pt}`` of the
        snapshots it wrote (None when stopped)."""
        start = time.time()
        outcome = {}

        def train():
            outcome["rc"], outcome["output"] = self.driver.spawn(
                self.train_argv, log_path=os.path.join(self.root, "train-output.log"))

        trainer = threading.Thread(target=train, daemon=True)
        trainer.start()
        ended_early = False
        while trainer.is_alive():
            trainer.join(timeout=0.5)
            if self.stop_at is not None and not ended_early and study_runs.trained_kimg(self.root) >= self.stop_at:
                ended_early = True
                self.driver.end_children()
        if self.driver.stopped:
            return None
        rc, output = outcome["rc"], outcome["output"]
        lines = [x for x in output.strip().splitlines() if x.strip()]
        rerun_diverged = rc != 0 and DIVERGED_MARK in output
        if rc != 0 and not rerun_diverged and not ended_early:
            raise RerunFailed("train.py exited with %d: %s" % (rc, lines[-1] if lines else "no output"))
        if ended_early:
            self.say("ended train.py after its tick at kimg %g (the snapshots up to kimg %d are final)"
                     % (study_runs.trained_kimg(self.root), self.stop_at - 1))
        recorded_diverged = self.run.diverged is not None
        if rerun_diverged:
            self.say("diverged: %s (%s)" % (lines[-1], "as recorded" if recorded_diverged else "NOT as recorded"))
            if not recorded_diverged:
                self.mismatches.append("the rerun diverged; the recorded run did not")
        elif recorded_diverged and not ended_early:
            self.mismatches.append("the recorded run diverged (%s); the rerun did not"
                                   % self.run.diverged.get("message"))
        _, per_kimg = study_runs.train_timing(self.root)
        self.say("trained in %s; s/kimg %s here, %s recorded (timings depend on the machine and its load: "
                 "not compared)" % (format_duration(time.time() - start), _num(per_kimg),
                                    _num(self.run.lines[0].get("s_per_kimg"))))
        return study_runs.snapshots(self.root)

    def _evaluate(self, line, network):
        """The recorded eval command on the rerun's snapshot with the recorded seed, then with the
        noise seeds: a list of results dicts, the recorded seed's first (None when stopped)."""
        argv = with_option(shlex.split(line["eval_command"]), "--network", display_path(network))
        seed = int(option_value(argv, "--seed"))
        seeds = [seed + i for i in range(self.noise_seeds + 1)]
        self.say("kimg %d: %s with --seed %s" % (line["kimg"], line["metric"], ", ".join(map(str, seeds))))
        found = []
        for s in seeds:
            rc, output = self.driver.spawn(with_option(argv, "--seed", str(s)))
            if self.driver.stopped:
                return None
            result = metric_result(output, line["metric"])
            if rc != 0 or result is None:
                tail = [x for x in output.strip().splitlines() if x.strip()]
                last = tail[-1] if tail else "exit code %d" % rc
                raise RerunFailed("calc_metrics.py %s --seed %d on %s failed: %s"
                                  % (line["metric"], s, display_path(network), last))
            found.append(result["results"])
        return found

    def _compare(self, line, values):
        """One table row per recorded number of ``line``."""
        for key, recorded in sorted(line["results"].items()):
            if not _is_number(recorded):
                continue
            samples = [v.get(key) for v in values]
            head = (line["kimg"], line["metric"], key, _num(recorded))
            if not all(_is_number(x) for x in samples):
                self.rows.append(head + ("missing", "", "", "", "OUTSIDE"))
                continue
            new, tolerance = samples[0], noise_tolerance(samples)
            ok = within_noise(float(recorded), float(new), tolerance)
            self.rows.append(head + (_num(new), "%+.4g" % (new - recorded), "%.4g" % statistics.stdev(samples),
                                     "%.4g" % tolerance, "ok" if ok else "OUTSIDE"))


def network_sentence(kimg, recorded_path, rerun_path):
    """Whether the rerun's networks equal the recorded snapshot's, tensor for tensor."""
    import torch

    from training.snapshot import read_weights_file

    if not os.path.isfile(recorded_path):
        return "kimg %d: the recorded snapshot %s is not on this machine: networks not compared" % (
            kimg, display_path(recorded_path))
    try:
        a, b = read_weights_file(recorded_path), read_weights_file(rerun_path)
    except ValueError as exc:
        return "kimg %d: networks not compared (%s)" % (kimg, exc)
    total, equal, largest = 0, 0, 0.0
    names = []
    for name, record in sorted(a["networks"].items()):
        other = b["networks"].get(name)
        if record is None and other is None:
            continue
        names.append(name)
        sa, sb = (record or {}).get("state_dict", {}), (other or {}).get("state_dict", {})
        for key in sorted(set(sa) | set(sb)):
            total += 1
            if key in sa and key in sb and sa[key].shape == sb[key].shape:
                if torch.equal(sa[key], sb[key]):
                    equal += 1
                elif sa[key].is_floating_point():
                    largest = max(largest, (sa[key] - sb[key]).abs().max().item())
            else:
                largest = math.inf
    nimg = [(d.get("resume_state") or {}).get("cur_nimg") for d in (a, b)]
    at = "" if nimg[0] == nimg[1] else " (recorded at %s images, rerun at %s)" % tuple(nimg)
    if equal == total:
        return "kimg %d: networks identical to the recorded snapshot, bit for bit (%d tensors of %s)%s" % (
            kimg, total, ", ".join(names), at)
    return "kimg %d: networks differ from the recorded snapshot: %d of %d tensors, largest difference %.3g%s" % (
        kimg, total - equal, total, largest, at)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value):
    return "-" if value is None else "%.6g" % value


def table(rows):
    """Rows of cells as aligned text lines."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
