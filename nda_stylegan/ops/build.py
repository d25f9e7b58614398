"""Just-in-time builds of the project's custom ops, with a pure-PyTorch fallback.

One mechanism for every op in the repo (the plugin's tile kernel and the trainer's
``bias_act`` / ``upfirdn2d``): sources are compiled on first use with
``torch.utils.cpp_extension`` + ninja into a cache folder keyed by a hash of the sources,
the torch version and the flags, so a second process (or a second run) loads the cached
build without compiling.

Each op library registers its functions with ``TORCH_LIBRARY(<namespace>, m)`` and light
headers (``<ATen/ATen.h>`` + ``<torch/library.h>``), and is called through ``torch.ops``.
Every namespace must be unique per process: one library per op family.

Environment switches:

``NDA_STYLEGAN_OPS``
    ``auto`` (default): build, and fall back to the reference with one warning on failure;
    ``reference``: never build, always use the pure-PyTorch reference;
    ``strict``: a failed build raises instead of falling back.
``NDA_STYLEGAN_CACHE_DIR``
    where built libraries are kept (default ``~/.cache/nda_stylegan/ops``).
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings

import torch

from ..fileio import atomic_write

MODES = ("auto", "reference", "strict")
_lock = threading.Lock()
_loaded = {}  # key -> bool (True: kernels registered; False: use reference)


class OpBuildError(RuntimeError):
    """A custom op could not be built (raised only in ``strict`` mode or when compiling on purpose)."""


def ops_mode():
    mode = os.environ.get("NDA_STYLEGAN_OPS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(
            "NDA_STYLEGAN_OPS=%r is not a known mode; use one of: %s" % (mode, ", ".join(MODES))
        )
    return mode


def cache_root():
    root = os.environ.get("NDA_STYLEGAN_CACHE_DIR")
    if not root:
        root = os.path.join(os.path.expanduser("~"), ".cache", "nda_stylegan", "ops")
    return root


def source_hash(paths, extra=()):
    """Hash of the sources' bytes plus anything else that changes the binary."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    for item in extra:
        h.update(str(item).encode())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


def find_cuda_home():
    """The CUDA toolkit root, or None. ``nvcc`` on PATH may be a wrapper far from the libraries,
    so ask nvcc itself where its toolkit lies (``TOP`` in its dry-run output)."""
    env = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if env and os.path.isdir(env):
        return env
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run(
            [nvcc, "--dryrun", "-c", "x.cu"], capture_output=True, text=True, timeout=60
        )
        text = out.stdout + out.stderr
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", text, re.M)
    if m:
        return os.path.realpath(m.group(1).strip())
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported without its import-time warning about a missing
    CUDA runtime (normal on CPU machines, and we find the toolkit ourselves when we need it)."""
    import logging

    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        log.setLevel(level)
    return cpp_extension


def _prepare_cuda_build():
    """Point cpp_extension at a usable toolkit; returns the toolkit root or raises OpBuildError."""
    cpp_extension = _cpp_extension()

    if torch.version.cuda is None:
        raise OpBuildError("this torch build has no CUDA support (torch %s)" % torch.__version__)
    home = find_cuda_home()
    if home is None:
        raise OpBuildError("no CUDA toolkit found: put nvcc on PATH or set CUDA_HOME")
    cpp_extension.CUDA_HOME = home
    os.environ.setdefault("CUDA_HOME", home)
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            os.environ["TORCH_CUDA_ARCH_LIST"] = "%d.%d" % (major, minor)
        else:
            # Without a GPU torch cannot guess the architecture; pick a common modern one.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0"
    return home


def _build_flags():
    """Compiler and linker flags: (cflags, ldflags, cuda_cflags)."""
    extra_cflags = ["-O3"]
    extra_ldflags = []
    extra_cuda_cflags = ["-O3"]
    if sys.platform.startswith("linux"):
        # Without -fopenmp, at::parallel_for in an op runs on one thread (torch ships libgomp.so.1).
        extra_cflags.append("-fopenmp")
        extra_ldflags.append("-fopenmp")
    return extra_cflags, extra_ldflags, extra_cuda_cflags


def library_name(name, sources, cuda=False):
    """The name (and cache folder) of a build: ``name`` plus a hash of the sources' bytes, the
    torch version, the flags and the CUDA architectures, so any change gets a fresh build."""
    if cuda:
        _prepare_cuda_build()
    cflags, ldflags, cuda_cflags = _build_flags()
    key = source_hash([os.path.abspath(s) for s in sources],
                      extra=(cuda, cflags, ldflags, cuda_cflags, os.environ.get("TORCH_CUDA_ARCH_LIST", "")))
    return "%s_%s%s" % (name, "cuda_" if cuda else "", key)


def compile_library(name, sources, cuda=False, build_dir=None, verbose=False):
    """Compile ``sources`` into a shared library and load it into this process.

    Returns the path of the built library. Raises OpBuildError on any failure.
    """
    cpp_extension = _cpp_extension()

    sources = [os.path.abspath(s) for s in sources]
    extra_cflags, extra_ldflags, extra_cuda_cflags = _build_flags()
    lib_name = library_name(name, sources, cuda=cuda)
    build_dir = build_dir or os.path.join(cache_root(), lib_name)
    os.makedirs(build_dir, exist_ok=True)
    try:
        staged = stage_sources(sources, build_dir)
        cpp_extension.load(
            name=lib_name,
            sources=staged,
            extra_cflags=extra_cflags,
            extra_ldflags=extra_ldflags,
            extra_cuda_cflags=extra_cuda_cflags,
            build_directory=build_dir,
            is_python_module=False,
            with_cuda=cuda,
            verbose=verbose,
        )
    except Exception as exc:  # compiler errors arrive as RuntimeError / CalledProcessError
        raise OpBuildError("building op %r failed: %s (build folder: %s)"
                           % (name, _first_error(str(exc), type(exc).__name__), build_dir)) from exc
    return os.path.join(build_dir, lib_name + ".so")


def stage_sources(sources, build_dir):
    """Copies of ``sources`` in ``build_dir/src``; returns their paths.

    The build compiles these copies, not the checkout's files: ninja's build file names every
    source by absolute path, so building from two checkouts (a fork and this repo, CI and a work
    tree) would otherwise rewrite it and rebuild each other's library. The cache folder is keyed
    by the sources' bytes and names, so a copy already there is left alone (its mtime too, which
    ninja compares).
    """
    names = [os.path.basename(p) for p in sources]
    if len(set(names)) != len(names):
        raise OpBuildError("op sources must have distinct file names, got %s" % ", ".join(sources))
    folder = os.path.join(build_dir, "src")
    os.makedirs(folder, exist_ok=True)
    staged = []
    for path in sources:
        target = os.path.join(folder, os.path.basename(path))
        with open(path, "rb") as f:
            data = f.read()
        if not _has_bytes(target, data):
            # Atomic, so another process staging the same bytes meanwhile is harmless; no fsync:
            # a copy lost in a crash fails the byte comparison above and is staged again.
            with atomic_write(target, "wb", fsync=False) as f:
                f.write(data)
        staged.append(target)
    return staged


def _has_bytes(path, data):
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


def _first_error(text, default):
    """The compiler's first error line (ninja's last line only says that a command failed)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if re.search(r"\berror\b", line, re.I) and not line.startswith("Error building extension"):
            return line
    return lines[-1] if lines else default


def compile_in_subprocess(name, sources, cuda=True, build_dir=None):
    """Compile (and load) in a child process; returns the library path or raises OpBuildError.

    For compile checks: the library never enters this process, so its op namespace cannot
    clash with an already loaded build of the same op.
    """
    code = (
        "import json, sys\n"
        "from nda_stylegan.ops.build import compile_library\n"
        "a = json.loads(sys.argv[1])\n"
        "print(compile_library(a['name'], a['sources'], cuda=a['cuda'], build_dir=a['dir']))\n"
    )
    args = dict(name=name, sources=[os.path.abspath(s) for s in sources], cuda=cuda, dir=build_dir)
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        last = tail[-1] if tail else "compiler exited with %d" % proc.returncode
        raise OpBuildError(last.split("OpBuildError: ", 1)[-1])
    return proc.stdout.strip().splitlines()[-1]


def load_op_library(name, cpu_sources, cuda_sources=()):
    """Build (once per process) and load an op library; True when its kernels are usable.

    ``cpu_sources`` register the schema and the CPU kernel; ``cuda_sources`` (a light
    registration ``.cpp`` plus ``.cu`` kernels) are added when a GPU is present. On failure
    in ``auto`` mode: one warning, then the caller uses its reference implementation; the
    result is memoised, so a failed build is never retried per call.
    """
    mode = ops_mode()
    if mode == "reference":
        return False
    use_cuda = bool(cuda_sources) and torch.cuda.is_available()
    key = (name, use_cuda)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        sources = list(cpu_sources) + (list(cuda_sources) if use_cuda else [])
        try:
            compile_library(name, sources, cuda=use_cuda)
            ok = True
        except OpBuildError as exc:
            if mode == "strict":
                raise
            warnings.warn(
                "%s; using the pure-PyTorch reference instead (set NDA_STYLEGAN_OPS=reference to "
                "silence this, or NDA_STYLEGAN_OPS=strict to make it an error)" % exc,
                RuntimeWarning,
                stacklevel=2,
            )
            ok = False
        _loaded[key] = ok
        return ok
