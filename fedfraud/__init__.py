"""fedfraud: federated fraud detection across banks with secure aggregation and differential privacy."""

__version__ = "0.1.0"
