"""Evaluation: metrics with bootstrap CIs, calibration, reports, comparison tables, the leak experiment."""
