"""Recognise a host fork and its version from its files, before anything is changed."""

import os
import re

from . import PatchError

HOSTS = ("stylegan2-ada-pytorch", "stylegan3")
# The trailing parameters of accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, ...)
_SIGNATURE_TAILS = {("sync", "gain"): "stylegan2-ada-pytorch", ("gain", "cur_nimg"): "stylegan3"}
_LEADING = ["phase", "real_img", "real_c", "gen_z", "gen_c"]
_ACCUMULATE = re.compile(r"def\s+accumulate_gradients\s*\(\s*self\s*,([^)]*)\)")
_NDA_OPTION = re.compile(r"""(['"])--nda(?:-[A-Za-z0-9-]*)?\1""")


def read_text(path, what):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PatchError("cannot read %s: %s" % (path, exc.strerror or exc))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PatchError("%s is not UTF-8 text; is %s really a fork's %s?" % (path, path, what))


def fork_files(fork_dir):
    """``(train_py, loss_py)`` of a fork folder; PatchError for a missing folder or a folder
    that is not a StyleGAN2-ADA-style fork."""
    if not os.path.exists(fork_dir):
        raise PatchError("no such folder: %s; give the path of the fork's checkout (the folder with train.py)" % fork_dir)
    if not os.path.isdir(fork_dir):
        raise PatchError("%s is not a folder; give the fork's checkout folder, not a file in it" % fork_dir)
    train_py = os.path.join(fork_dir, "train.py")
    loss_py = os.path.join(fork_dir, "training", "loss.py")
    missing = [p for p in ("train.py", os.path.join("training", "loss.py")) if not os.path.isfile(os.path.join(fork_dir, p))]
    if missing:
        raise PatchError("%s is not a recognised fork: it has no %s (expected a stylegan2-ada-pytorch or stylegan3 "
                         "checkout)" % (fork_dir, " or ".join(missing)))
    return train_py, loss_py


def detect_host(loss_text, loss_py):
    """``"stylegan2-ada-pytorch"`` or ``"stylegan3"`` from training/loss.py's
    accumulate_gradients signature; PatchError when neither matches."""
    m = _ACCUMULATE.search(loss_text)
    if not m:
        raise PatchError("%s has no accumulate_gradients(self, ...): not a recognised fork (expected a "
                         "stylegan2-ada-pytorch or stylegan3 checkout)" % loss_py)
    params = [p.split("=")[0].split(":")[0].strip() for p in m.group(1).split(",") if p.strip()]
    host = _SIGNATURE_TAILS.get(tuple(params[5:]))
    if params[:5] != _LEADING or host is None:
        raise PatchError("unknown host version: %s has accumulate_gradients(self, %s), which matches neither "
                         "stylegan2-ada-pytorch (..., sync, gain) nor stylegan3 (..., gain, cur_nimg); supported: %s"
                         % (loss_py, ", ".join(params), ", ".join(HOSTS)))
    return host


def check_no_nda_option(train_text, train_py):
    m = _NDA_OPTION.search(train_text)
    if m:
        raise PatchError("%s already has an option %s, which would clash with the plugin's --nda options; rename "
                         "or remove it first" % (train_py, m.group()[1:-1]))
