"""Metrics for our trainer and calc_metrics.py, with stylegan2-ada-pytorch names and output files."""
