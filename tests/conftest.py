"""Loaded by pytest before any test module: the repository root goes on sys.path, because
train.py's packages (``training/``, ``metrics/``) and the CLIs at the root live in the checkout,
not in the installed package (which holds ``nda_stylegan`` only)."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
