"""Runs the study: train.py and calc_metrics.py as subprocesses, N at a time, resumable.

A *task* is one run ``(part, arm, seed)``: train it (from scratch, or ``--resume`` from its latest
snapshot when an earlier driver was stopped), then score each planned snapshot with each metric,
appending one line per (snapshot, metric) to the results file. Everything already in the results
file is skipped, so the driver can be stopped at any moment and started again.
"""

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from experiments import study_runs
from experiments.study_results import append_record, index_results, read_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT_TAIL = 1 << 18
DIVERGED_MARK = "training diverged"  # train.py's one-line error when losses become NaN/Inf
# Runs a child so that it dies with the thread that started it (Linux's parent-death signal):
# a driver killed with SIGKILL leaves no trainer behind to race a restarted driver.
_LAUNCH = (
    "import ctypes, os, sys, signal\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(143)\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n"
)


class RunFailed(Exception):
    """A run's subprocess failed for a reason other than divergence (retried by the next driver)."""


class PlanChanged(Exception):
    """A run was started with other options than the plan now gives it."""


@dataclass(frozen=True)
class Task:
    part: object  # study_plan.Part
    arm: str
    arm_index: int
    options: tuple
    seed: int
    root: str  # absolute; commands show it relative to the repository when inside it

    @property
    def key(self):
        return (self.part.name, self.arm, self.seed)

    def label(self):
        return "%s/%s seed %d" % self.key


def display_path(path):
    """Paths inside the repository are recorded relative to it (commands stay copyable)."""
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path


def git_state():
    """``(commit, dirty)`` of the checkout; the results folder does not count as a change."""
    def git(*args):
        return subprocess.run(["git", "-C", REPO] + list(args), capture_output=True, text=True, timeout=60)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)experiments/results")
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    if head.returncode != 0:
        return "unknown", None
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


def arms_of(study, part, promotions):
    """The part's arms, plus the promoted sweep setting once it has been recorded."""
    arms = list(part.arms)
    pr = study.promotion
    if pr is not None and part.name in pr.target_parts and pr.source_part in promotions:
        arms.append((pr.target_arm, tuple(promotions[pr.source_part]["options"])))
    return arms


def plan_tasks(study, part_names, workdir, promotions):
    """Tasks in running order: part by part, then seed by seed, each seed across all arms (an
    interrupted study has whole seeds of every arm rather than all seeds of the first arms)."""
    tasks = []
    for name in part_names:
        part = study.part(name)
        arms = arms_of(study, part, promotions)
        for seed in part.seeds:
            for index, (arm, options) in enumerate(arms):
                root = os.path.abspath(study_runs.run_root(workdir, part.name, arm, seed))
                tasks.append(Task(part, arm, index, tuple(options), seed, root))
    return tasks


def planned_keys(study, task):
    return [(task.part.name, task.arm, task.seed, k, m.name) for k in task.part.eval_kimg for m in study.metrics]


class _RunLock:
    """An exclusive, non-blocking lock on a run folder: two drivers never work on one run."""

    def __init__(self, root):
        import fcntl

        os.makedirs(root, exist_ok=True)
        self._fd = os.open(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = True
        except OSError:
            self.held = False
            os.close(self._fd)

    def release(self):
        if self.held:
            os.close(self._fd)
            self.held = False


def run_is_locked(root):
    if not os.path.isdir(root):
        return False
    lock = _RunLock(root)
    locked = not lock.held
    lock.release()
    return locked


class Driver:
    def __init__(self, study, results_path, workdir, workers, python=sys.executable, env=None, out=None):
        self.study = study
        self.results_path = results_path
        self.workdir = workdir
        self.workers = max(1, int(workers))
        self.python = python
        self.env = dict(os.environ if env is None else env)
        # One torch thread per process: N workers on N cores (the cpu preset asks for one too).
        self.env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
        self.out = out or sys.stdout
        self.commit, self.dirty = git_state()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._children = set()
        self.done, self.diverged, self.promotions = {}, {}, {}  # what the results file holds
        self.refresh()
        self.failures = []

    def refresh(self):
        """Re-read the results file: another driver (another part, or a second terminal) may have
        finished runs since this one started."""
        records, _ = read_results(self.results_path)
        found = index_results(records)
        with self._lock:
            for mine, theirs in zip((self.done, self.diverged, self.promotions), found):
                for key, value in theirs.items():
                    mine.setdefault(key, value)

    def _git(self):
        """The checkout's state now (code merged while the study runs is recorded as such)."""
        self.commit, self.dirty = git_state()
        return self.commit, self.dirty

    # ------------------------------------------------------------------ output and subprocesses
    def say(self, line):
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    @property
    def stopped(self):
        return self._stop.is_set()

    def stop(self):
        """Stop soon: running children get SIGTERM; nothing new starts."""
        self._stop.set()
        self.end_children()

    def end_children(self):
        """SIGTERM to the running children (a rerun ends its trainer early this way)."""
        with self._lock:
            children = list(self._children)
        for proc in children:
            if proc.poll() is None:
                proc.terminate()

    def spawn(self, argv, log_path=None, usage=None):
        """Run ``argv`` (``argv[0]`` is ``python``) from the repository root; ``(rc, output)``,
        with the output also appended to ``log_path`` when given. ``usage``: a dict that gets
        ``cpu_s``, the child's user + system CPU seconds (None when they could not be read)."""
        cmd = [self.python, "-c", _LAUNCH, str(os.getpid())] + list(argv[1:])
        log = open(log_path, "ab") if log_path else None
        try:
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            with self._lock:
                self._children.add(proc)
            if self._stop.is_set():  # stop() ran while this child was starting
                proc.terminate()
            tail = b""  # the end of the output is enough for errors (a 50-kimg run prints megabytes)
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                tail = (tail + chunk)[-OUTPUT_TAIL:]
                if log is not None:
                    log.write(chunk)
                    log.flush()
            rc, cpu = _wait_with_cpu_time(proc)
            if usage is not None:
                usage["cpu_s"] = cpu
        finally:
            if log is not None:
                log.close()
        with self._lock:
            self._children.discard(proc)
        return rc, tail.decode("utf-8", "replace")

    # ------------------------------------------------------------------ one run
    def is_complete(self, task):
        """Every planned line is in the results file; for a diverged run, those of the snapshots it wrote."""
        keys = planned_keys(self.study, task)
        with self._lock:
            diverged = task.key in self.diverged
        if diverged:
            written = study_runs.snapshots(task.root)
            keys = [k for k in keys if k[3] in written]
        with self._lock:
            return all(key in self.done for key in keys)

    def _train(self, task):
        """Train (or resume) until train.py exits 0; returns run facts for the result lines."""
        root = task.root
        trained = study_runs.read_json(os.path.join(root, "trained.json"))
        info = study_runs.read_json(os.path.join(root, "run.json"))
        fresh = study_runs.train_argv(task.part, task.options, task.seed, display_path(root),
                                      self.study.train_options)
        command = study_runs.command_text(fresh)
        if info is not None and info.get("command") != command:
            raise PlanChanged("%s was started as `%s` but the plan now gives `%s`; restore the plan (or record the "
                              "change in the README and move the run folder away)"
                              % (task.label(), info.get("command"), command))
        if info is None:
            info = dict(part=task.part.name, arm=task.arm, seed=task.seed, command=command, segments=[])
        with self._lock:
            diverged = task.key in self.diverged
        if trained is None and not diverged:  # a diverged run would diverge again: never retrained
            latest = study_runs.latest_snapshot(root)
            argv = list(fresh)
            if latest is not None:
                argv += ["--resume", display_path(latest[1])]
                self.say("resume %s from kimg %d" % (task.label(), latest[0]))
            commit, dirty = self._git()
            info["segments"].append(dict(commit=commit, dirty=dirty,
                                         resume=None if latest is None else display_path(latest[1])))
            study_runs.write_json(os.path.join(root, "run.json"), info)
            usage = {}
            rc, output = self.spawn(argv, log_path=os.path.join(root, "train-output.log"), usage=usage)
            info["segments"][-1]["cpu_s"] = usage.get("cpu_s")  # a stopped segment's too: it trained
            study_runs.write_json(os.path.join(root, "run.json"), info)
            if self._stop.is_set():
                return None
            if rc != 0:
                tail = [line for line in output.strip().splitlines() if line.strip()]
                last = tail[-1] if tail else "exit code %d" % rc
                if DIVERGED_MARK in output:
                    self._record(dict(type="diverged", part=task.part.name, arm=task.arm, arm_index=task.arm_index,
                                      baseline_arm=task.part.baseline, seed=task.seed, message=last,
                                      train_command=command, commit=commit, dirty=dirty))
                    with self._lock:
                        self.diverged[task.key] = True
                    self.say("diverged %s: %s (recorded; its snapshots are still evaluated)" % (task.label(), last))
                else:
                    raise RunFailed("train.py exited with %d: %s" % (rc, last))
            else:
                trained = self._timing(task, info)
                study_runs.write_json(os.path.join(root, "trained.json"), trained)
        if trained is None:  # diverged: time up to its last tick
            trained = self._timing(task, info)
        commits = []
        for seg in info["segments"]:
            if seg.get("commit") not in commits:
                commits.append(seg.get("commit"))
        return dict(trained, train_command=command, train_commits=commits)

    @staticmethod
    def _timing(task, info):
        """Wall time and s/kimg from the trainer's stats; CPU seconds per planned kimg from the
        segments' CPU times (None when a segment's is unknown: one started by an older driver,
        or one killed with its driver)."""
        wall, per_kimg = study_runs.train_timing(task.root)
        cpu = [seg.get("cpu_s") for seg in info["segments"]]
        cpu_total = sum(cpu) if cpu and all(isinstance(c, (int, float)) for c in cpu) else None
        return dict(train_wall_s=wall, s_per_kimg=per_kimg, segments=len(study_runs.segments(task.root)),
                    train_cpu_s=cpu_total, cpu_s_per_kimg=None if cpu_total is None else cpu_total / task.part.kimg)

    def _evaluate(self, task, facts):
        snaps = study_runs.snapshots(task.root)
        for kimg in task.part.eval_kimg:
            for metric in self.study.metrics:
                key = (task.part.name, task.arm, task.seed, kimg, metric.name)
                if self._stop.is_set():
                    return
                with self._lock:
                    if key in self.done:
                        continue
                if kimg not in snaps:
                    if task.key in self.diverged:
                        continue  # it stopped before this snapshot
                    raise RunFailed("no snapshot for kimg %d in %s; check the plan's snap/eval_kimg"
                                    % (kimg, task.root))
                network = display_path(snaps[kimg])
                commit, dirty = self._git()
                argv = (["python", "calc_metrics.py", "--network", network, "--metrics", metric.name,
                         "--seed", str(self.study.eval_seed), "--verbose", "false"] + list(metric.options))
                start = time.time()
                rc, output = self.spawn(argv)
                wall = time.time() - start
                if self._stop.is_set():
                    return
                result = metric_result(output, metric.name)
                if rc != 0 or result is None:
                    lines = [line for line in output.strip().splitlines() if line.strip()]
                    raise RunFailed("calc_metrics.py %s on %s failed: %s"
                                    % (metric.name, network, lines[-1] if lines else "exit code %d" % rc))
                record = dict(type="metric", part=task.part.name, arm=task.arm, arm_index=task.arm_index,
                              baseline_arm=task.part.baseline, seed=task.seed, kimg=kimg, metric=metric.name,
                              metric_options=list(metric.options), results=result["results"],
                              metric_time_s=result.get("total_time"), eval_wall_s=wall,
                              eval_command=study_runs.command_text(argv), snapshot=network,
                              commit=commit, dirty=dirty, **facts)
                self._record(record)
                with self._lock:
                    self.done[key] = record

    def _record(self, record):
        with self._lock:
            append_record(self.results_path, record)

    def run_task(self, task):
        """Returns 'skipped', 'busy', 'done', 'stopped' or 'failed'."""
        if self.is_complete(task):
            return "skipped"
        lock = _RunLock(task.root)
        if not lock.held:
            self.say("busy %s: another driver is working on it; skipped" % task.label())
            return "busy"
        try:
            self.refresh()  # under the run's lock: lines another driver wrote are seen before any work
            if self.is_complete(task):
                return "skipped"
            facts = self._train(task)
            if facts is None:
                return "stopped"
            self._evaluate(task, facts)
            if self._stop.is_set():
                return "stopped"
            return "done"
        except (RunFailed, PlanChanged) as exc:
            return self._failed(task, str(exc))
        except Exception as exc:  # noqa: BLE001  (one broken run must not end the others' worker)
            return self._failed(task, "%s: %s" % (type(exc).__name__, exc))
        finally:
            lock.release()

    def _failed(self, task, message):
        with self._lock:
            self.failures.append("%s: %s" % (task.label(), message))
        self.say("FAILED %s: %s" % (task.label(), message))
        return "failed"

    # ------------------------------------------------------------------ the pool
    def run(self, tasks, study_tasks=None):
        """Work through ``tasks`` with the driver's workers; returns the count per outcome.
        ``study_tasks`` (default ``tasks``): every run of the study, for the ETA of the whole."""
        study_tasks = tasks if study_tasks is None else study_tasks
        pending = [t for t in tasks if not self.is_complete(t)]
        self.say("%d runs planned, %d already finished, %d to do with %d worker(s); results: %s"
                 % (len(tasks), len(tasks) - len(pending), len(pending), self.workers,
                    display_path(self.results_path)))
        queue = list(pending)
        outcomes = dict(skipped=len(tasks) - len(pending))

        def worker():
            while not self._stop.is_set():
                with self._lock:
                    if not queue:
                        return
                    task = queue.pop(0)
                start = time.time()
                outcome = self.run_task(task)
                with self._lock:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if outcome == "done":
                    self.say(self._progress_line(task, time.time() - start, study_tasks))

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(self.workers, len(pending)))]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
        return outcomes

    def _progress_line(self, task, seconds, study_tasks):
        """``done main/baseline seed 0 in 14m 02s; study: 22 runs left, ETA 2h 41m at 2 workers``."""
        left = [t for t in study_tasks if not self.is_complete(t)]
        cost = self.run_cost(study_tasks)
        eta = "unknown" if cost is None else format_duration(cost * len(left) / self.workers)
        return ("done %s in %s; study: %d runs left, ETA %s at %d worker(s)"
                % (task.label(), format_duration(seconds), len(left), eta, self.workers))

    def run_cost(self, study_tasks):
        """Median seconds of one whole run (training over all its segments plus the wall time of
        each of its evaluations), over the finished runs in the results file. From the file, not
        from this driver's clock: right after a restart the runs it finishes only needed their
        last evaluations, and an ETA from them would be far too low."""
        costs = []
        for t in study_tasks:
            if not self.is_complete(t):
                continue
            with self._lock:
                lines = [r for k, r in self.done.items() if k[:3] == t.key]
            if not lines:
                continue  # a diverged run before its first snapshot
            train = lines[0].get("train_wall_s")
            evals = [r.get("eval_wall_s") for r in lines]
            if isinstance(train, (int, float)) and all(isinstance(e, (int, float)) for e in evals):
                costs.append(train + sum(evals))
        if not costs:
            return None
        costs.sort()
        mid = len(costs) // 2
        return costs[mid] if len(costs) % 2 else (costs[mid - 1] + costs[mid]) / 2


def _wait_with_cpu_time(proc):
    """``(returncode, CPU seconds)`` of a finished child. CPU time, unlike wall time, hardly
    depends on what else shares the cores (the trainer runs one thread and no worker processes)."""
    try:
        _, status, rusage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # already reaped (by poll() from stop()): no usage to read
        return proc.wait(), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, rusage.ru_utime + rusage.ru_stime


def metric_result(output, name):
    """calc_metrics.py prints each result as one JSON line; the last one of ``name`` wins."""
    import json

    found = None
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("metric") == name and isinstance(data.get("results"), dict):
                found = data
    return found


def format_duration(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return "%dh %02dm" % (h, m)
    if m:
        return "%dm %02ds" % (m, s)
    return "%ds" % s
