"""The bank's Flower ClientApp: train on local data, protect the update, reveal aggregates."""
