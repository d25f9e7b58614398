"""TensorBoard export of a run's statistics, the way stylegan2-ada-pytorch's loop writes them, so
its users can watch our runs with the same dashboards.

When ``torch.utils.tensorboard`` imports (it needs the ``tensorboard`` package), rank 0 writes an
``events.out.tfevents.*`` file into the run folder. At the end of every tick it adds one scalar
per statistic of that tick's ``stats.jsonl`` line (its mean, under the same name: losses, the NDA
statistics, ``Progress/augment`` = ADA's p, timing, ...) and the latest result of every metric
as ``Metrics/<result name>``; the step is the number of whole kimg trained and the wall time
the seconds since the loop started. Without tensorboard the run says so once and goes on.
"""


class TensorBoardLog:
    def __init__(self, run_dir, start_time, log=print):
        self.start_time = start_time
        self.metrics = {}  # latest value of every metric result, repeated at each tick as the host does
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            log("Skipping the TensorBoard export (%s); pip install tensorboard to get it" % exc)
            return
        self.writer = SummaryWriter(run_dir)

    def add_metric_results(self, results):
        """``results``: ``{"fid50k_full": 12.3, ...}`` (a metric's ``results`` dict)."""
        self.metrics.update(results)

    def write_tick(self, cur_nimg, stats, timestamp):
        """``stats``: ``{name: {"num", "mean", "std"}}`` as in stats.jsonl; flushed at once so a
        running TensorBoard sees each tick and a killed run loses nothing."""
        if self.writer is None:
            return
        step = int(cur_nimg / 1e3)
        walltime = timestamp - self.start_time
        for name, value in stats.items():
            self.writer.add_scalar(name, value["mean"], global_step=step, walltime=walltime)
        for name, value in self.metrics.items():
            self.writer.add_scalar("Metrics/" + name, value, global_step=step, walltime=walltime)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
