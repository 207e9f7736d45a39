"""Cross-bank tests drive the real ClientApp in process: Flower's task identity is needed."""

from tests.fl.conftest import task_identity  # noqa: F401
