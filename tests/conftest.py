"""Loaded by pytest before any test module: the repository root goes on sys.path, because
train.py's packages (``training/``, ``metrics/``) and the CLIs at the root live in the checkout,
not in the installed package (which holds ``nda_stylegan`` only).

It also hides GPUs from the suite (and from the processes its tests start) unless
NDA_TESTS_USE_GPU=1: the trainer picks a GPU whenever it sees one, and the tests pin CPU
behaviour (the ``cpu`` preset, bit-exact resumes, one process per core), so on a GPU machine
they would test something else. The GPU's own tests, tests/test_cuda_ops.py, need the variable:
``NDA_TESTS_USE_GPU=1 pytest tests/test_cuda_ops.py`` (tests/run_gpu_checks.sh does this).
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

USE_GPU = os.environ.get("NDA_TESTS_USE_GPU", "").strip() == "1"
if not USE_GPU:
    # Read by CUDA when it first starts, which no test has done yet at this point.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
