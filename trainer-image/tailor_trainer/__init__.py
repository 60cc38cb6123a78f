"""Tailor's trainer: the process torchrun starts in every worker pod (see run.py)."""
