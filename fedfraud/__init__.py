"""fedfraud: federated fraud detection across banks, with secure aggregation and DP."""

__version__ = "0.1.0"
