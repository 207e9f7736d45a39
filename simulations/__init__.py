"""Researcher tooling: local multi-bank simulations, baselines, reports."""
