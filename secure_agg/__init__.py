"""Secure aggregation backends behind one protocol: `secure_agg.get(name, role, options)`."""

from secure_agg.base import (
    Aggregate,
    Payload,
    SecureAggregator,
    available,
    get,
    provision,
    register,
)

__all__ = ["Aggregate", "Payload", "SecureAggregator", "available", "get", "provision", "register"]
