"""The ``nda-stylegan patch`` command: add (or remove) the trainer-plugin hook in a fork's train.py."""

import os

import click

from . import PatchError
from .edit import apply_hook, is_patched, strip_hook, unified_diff
from ..fileio import atomic_write_bytes
from .files import backup_path, check_writable, file_mode
from .hookcheck import missing_hook_calls
from .hookfile import read_hook
from .hosts import check_no_nda_option, detect_host, fork_files, read_text


class _Refusal(click.ClickException):
    """Printed as one line, ``Error: ...``, exit status 2."""

    exit_code = 2


def patch_fork(fork_dir, dry_run=False):
    """Add the hook to ``fork_dir``'s train.py. Returns ``(message, diff)``; ``diff`` is the change
    (printed instead of applied with ``dry_run``) or None when there is nothing to do."""
    train_py, loss_py = fork_files(fork_dir)
    text = read_text(train_py, "train.py")
    if is_patched(text) or "stylegan.trainer_plugins" in text:
        _check_existing_hook(text, train_py, fork_dir)
    if is_patched(text):
        return "already patched: %s has the trainer-plugin hook" % train_py, None
    if "stylegan.trainer_plugins" in text:
        return "nothing to do: %s loads stylegan.trainer_plugins itself" % train_py, None
    host = detect_host(read_text(loss_py, "training/loss.py"), loss_py)
    check_no_nda_option(text, train_py)
    new_text = apply_hook(text, read_hook(host), host)
    diff = unified_diff(text, new_text)
    if dry_run:
        return "dry run: %s (%s) would change as shown; nothing written" % (train_py, host), diff
    check_writable(train_py)
    mode = file_mode(train_py)
    with open(train_py, "rb") as f:
        original = f.read()
    atomic_write_bytes(backup_path(train_py), original, permissions=mode)
    atomic_write_bytes(train_py, new_text.encode("utf-8"), permissions=mode)
    return ("patched %s (%s); backup: %s; undo: nda-stylegan patch --revert %s"
            % (train_py, host, backup_path(train_py), fork_dir)), diff


def _check_existing_hook(text, train_py, fork_dir):
    """A hook already in train.py (ours, or one made by hand) must be complete: a partial one
    would make the fork fail at its first --nda run."""
    missing = missing_hook_calls(text)
    if not missing:
        return
    if is_patched(text):
        fix = "run nda-stylegan patch --revert %s, then nda-stylegan patch %s again" % (fork_dir, fork_dir)
    else:
        fix = "complete it from the hook file of your host (docs/fork.md) or remove it and run nda-stylegan patch again"
    raise PatchError("%s has a partial stylegan.trainer_plugins hook: no code that runs %s; %s"
                     % (train_py, missing[0], fix))


def revert_fork(fork_dir, dry_run=False):
    """Remove the hook: the backup byte for byte when train.py is as the patch left it, otherwise
    only the hook's lines (keeping later edits). Returns ``(message, diff)``."""
    if not os.path.isdir(fork_dir):
        fork_files(fork_dir)  # the same one-line error as when patching
    train_py = os.path.join(fork_dir, "train.py")
    if not os.path.isfile(train_py):
        raise PatchError("%s has no train.py; nothing to revert" % fork_dir)
    text = read_text(train_py, "train.py")
    if not is_patched(text):
        return "not patched: %s has no trainer-plugin hook; nothing to revert" % train_py, None
    backup = backup_path(train_py)
    restored, exact = None, False
    if os.path.isfile(backup):
        with open(backup, "rb") as f:
            original = f.read()
        try:
            original_text = original.decode("utf-8")
            host = detect_host(read_text(os.path.join(fork_dir, "training", "loss.py"), "training/loss.py"),
                               os.path.join(fork_dir, "training", "loss.py"))
            exact = apply_hook(original_text, read_hook(host), host) == text
        except (PatchError, UnicodeDecodeError):
            exact = False
        if exact:
            restored = original
    if restored is None:
        restored = strip_hook(text).encode("utf-8")
    diff = unified_diff(text, restored.decode("utf-8"))
    if dry_run:
        return "dry run: %s would change as shown; nothing written" % train_py, diff
    check_writable(train_py)
    atomic_write_bytes(train_py, restored, permissions=file_mode(train_py))
    if exact:
        os.unlink(backup)
        return "reverted %s: restored from the backup, byte for byte" % train_py, diff
    kept = "; the backup %s is kept" % backup if os.path.isfile(backup) else ""
    return ("reverted %s: removed the hook's lines (the file changed since it was patched, so your other "
            "edits are kept%s)" % (train_py, kept)), diff


@click.command("patch")
@click.argument("fork_dir", metavar="FORK_DIR")
@click.option("--dry-run", is_flag=True, help="Print the change as a unified diff and write nothing.")
@click.option("--revert", is_flag=True, help="Remove the hook (restores train.py from the backup).")
def patch_command(fork_dir, dry_run, revert):
    """Let a stylegan2-ada-pytorch or stylegan3 fork load trainer plugins such as --nda.

    Inserts a small hook into FORK_DIR/train.py (a backup is kept next to it). The hook finds
    installed `stylegan.trainer_plugins` entry points; with none installed the fork behaves as
    before.

    \b
    Examples:
      nda-stylegan patch ~/stylegan3 --dry-run
      nda-stylegan patch ~/stylegan3
      nda-stylegan patch ~/stylegan3 --revert
    """
    try:
        message, diff = (revert_fork if revert else patch_fork)(fork_dir, dry_run=dry_run)
    except PatchError as exc:
        raise _Refusal(str(exc))
    if dry_run and diff:
        click.echo(diff, nl=False)
    click.echo(message, err=dry_run)
