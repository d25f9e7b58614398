"""Studies run with the project's own train.py and calc_metrics.py (see nda_study.py)."""
