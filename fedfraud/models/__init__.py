"""Fraud models behind one registry: `fedfraud.models.build(name, spec)`."""

from fedfraud.models.registry import ModelSpec, available, build, register

__all__ = ["ModelSpec", "available", "build", "register"]
