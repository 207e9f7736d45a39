"""User-facing errors: each names the problem and the fix; the CLI prints one line, exit 2."""


class FedfraudError(Exception):
    """Base class for errors caused by user input or environment, not by a bug."""


class ConfigError(FedfraudError):
    """An invalid configuration value or combination."""


class DataError(FedfraudError):
    """Input data that is missing, malformed or unusable for training."""


class PayloadError(FedfraudError):
    """A secure-aggregation payload that is malformed, tampered with or made under other keys."""


class BudgetExceededError(FedfraudError):
    """A bank's privacy budget would be exceeded by the requested training."""
