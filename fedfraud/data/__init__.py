"""Transaction data: canonical schema, synthetic consortium, loaders, splits and graphs."""
