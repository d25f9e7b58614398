"""Running the training loop in several processes with torch.distributed.

Two ways in, one code path:
- ``train.py --gpus N`` spawns N local processes (torch.multiprocessing) that meet through a
  ``file://`` rendezvous in a temporary folder;
- ``torchrun`` (multi-node or single-node) starts the processes itself and sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``: we join with ``env://``.
Backend: NCCL on GPUs, gloo on the CPU (so several CPU processes also work, e.g. in tests).
"""

import atexit
import gc
import os
import sys
import tempfile
import traceback

import torch


def backend_for(device):
    return "nccl" if device == "cuda" else "gloo"


def torchrun_env():
    """``(rank, world_size, local_rank)`` when started by torchrun (or any launcher that sets
    torch's standard variables), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return rank, world_size, local_rank


def setup_process_device(device, local_rank, local_world_size):
    """Pin a GPU process to its own GPU; split the CPU cores between CPU processes so they do
    not oversubscribe the machine."""
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    elif local_world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))


def init_process_group(rank, world_size, device, init_method):
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend_for(device), init_method=init_method,
                                             rank=rank, world_size=world_size)


def close_process_group():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def broadcast_object(obj, src=0):
    """Rank ``src``'s ``obj`` on every rank (a no-op in a single process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return obj
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def _exit_status(exc):
    """The status ``SystemExit`` would give; a message is printed, as the interpreter would."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def exit_process(status):
    """Leave a process-group member now: destroy the group, flush our output, and end the process
    without the interpreter's teardown.

    Why: when gloo's C++ process group (or work it still holds) outlives destroy_process_group,
    its worker threads are torn down during interpreter finalisation, which can abort the process
    ("terminate called without an active exception", SIGABRT) after training has succeeded. Every
    file we write is closed (and renamed into place) before this point, and ``atexit`` hooks are
    run here, so nothing is lost.
    """
    close_process_group()
    gc.collect()
    atexit._run_exitfuncs()  # Python-level exit hooks (a plugin's logger flushing, say) still run
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_then_exit(fn, *args):
    """Run ``fn(*args)`` in a member of a process group, then end the process with its status.

    A normal return waits at a barrier first, so no rank tears down its connections while another
    still talks to it. ``SystemExit`` (a deliberate stop that has already said why, e.g. diverged
    training) ends the process with its code; any other exception propagates after the group is
    closed, so torch's spawn can hand the traceback to the parent.
    """
    try:
        fn(*args)
    except SystemExit as exc:
        exit_process(_exit_status(exc))
    except BaseException:
        close_process_group()
        raise
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    exit_process(0)


def _spawned_process(rank, fn, world_size, device, init_method, args):
    setup_process_device(device, rank, world_size)
    init_process_group(rank, world_size, device, init_method)
    run_then_exit(fn, rank, *args)


def launch(fn, world_size, device="cpu", args=()):
    """Run ``fn(rank, *args)`` in ``world_size`` processes joined by torch.distributed.

    ``fn`` must be importable by name (a module-level function): processes are spawned, not
    forked, because CUDA cannot be used in forked children. One process runs in place.
    """
    if world_size == 1:
        fn(0, *args)
        return
    with tempfile.TemporaryDirectory(prefix="nda-stylegan-dist-") as tmp:
        init_method = "file://" + os.path.abspath(os.path.join(tmp, "rendezvous"))
        try:
            torch.multiprocessing.spawn(_spawned_process, args=(fn, world_size, device, init_method, args),
                                        nprocs=world_size, join=True)
        except torch.multiprocessing.ProcessExitedException as exc:
            # A child exited on purpose (e.g. diverged training) after saying why.
            raise SystemExit(exc.exit_code or 1)


def join_torchrun(device):
    """Join the process group torchrun prepared; returns ``(rank, world_size)``."""
    rank, world_size, local_rank = torchrun_env()
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    setup_process_device(device, local_rank, local_world_size)
    init_process_group(rank, world_size, device, "env://")
    return rank, world_size


def run_training_loop(rank, config):
    """The per-process entry point of train.py: hand the config to the training loop."""
    from training import training_loop  # imported here: spawned children import it themselves
    from training.dataset import DatasetError

    try:
        training_loop.training_loop(rank=rank, **config)
    except training_loop.TrainingDiverged:
        # The loop has already reported the one line (log.txt and stderr); no traceback on top.
        raise SystemExit(1)
    except training_loop.MetricFailed as exc:
        # Any process may raise it (rank 0 alone logs): one line on stderr and in log.txt.
        line = "Error: %s" % exc
        print(line, file=sys.stderr, flush=True)
        with open(os.path.join(config["run_dir"], "log.txt"), "a") as f:
            f.write(line + "\n")
        raise SystemExit(1)
    except DatasetError as exc:
        # Data that passed the checks before launch but fails to decode mid-run (a corrupt image):
        # one line on stderr and in log.txt, exit code 2 like every other bad-input error.
        line = "Error: --data: %s" % _last_line(exc)
        print(line, file=sys.stderr, flush=True)
        with open(os.path.join(config["run_dir"], "log.txt"), "a") as f:
            f.write(line + "\n")
        raise SystemExit(2)
    except Exception:
        record_failure(config.get("run_dir"), rank)
        raise


def _last_line(exc):
    """The message itself: a DataLoader worker's error arrives wrapped in the worker's traceback."""
    lines = str(exc).strip().splitlines() or [repr(exc)]
    return lines[-1].split(type(exc).__name__ + ": ", 1)[-1]


def record_failure(run_dir, rank):
    """Append the exception being handled to the run's log.txt, so a run folder left by a failed
    run says why it stopped (the console shows the same traceback)."""
    if not run_dir or not os.path.isdir(run_dir):
        return
    who = "" if rank == 0 else " in process %d" % rank
    try:
        with open(os.path.join(run_dir, "log.txt"), "a") as f:
            f.write("Training failed%s:\n%s" % (who, traceback.format_exc()))
    except OSError:
        pass  # the log is a courtesy; the error itself still propagates
