"""Secure aggregation backends behind one protocol: `secure_agg.get(name, role, options)`."""

from secure_agg.base import (
    Aggregate,
    Exchange,
    InteractiveAggregator,
    Payload,
    SecureAggregator,
    StageContext,
    available,
    get,
    is_interactive,
    provision,
    register,
    validate,
)

__all__ = [
    "Aggregate",
    "Exchange",
    "InteractiveAggregator",
    "Payload",
    "SecureAggregator",
    "StageContext",
    "available",
    "get",
    "is_interactive",
    "provision",
    "register",
    "validate",
]
