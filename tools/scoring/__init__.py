"""Scoring: every score of docs/EVALUATION.md, the judges and baselines, and the pictures."""
