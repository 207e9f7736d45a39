"""The operator's Flower ServerApp: rounds, secure aggregation, evaluation, results."""
