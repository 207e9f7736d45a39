"""The one place that imports CrypTen, with the stand-in its 0.4.1 release needs on newer torch.

CrypTen 0.4.1 imports `torch.onnx._internal.registration.registry` at import time; torch >= 2.5
removed that module. Only CrypTen's ONNX model converter uses it, which fedfraud never calls, so
a stand-in module with `registry = None` is enough. Everything else in fedfraud reaches CrypTen
through `import_crypten()`, so a broken CrypTen install only breaks the 'crypten' backend.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

from fedfraud.errors import ConfigError

_ONNX_REGISTRATION = "torch.onnx._internal.registration"
INSTALL_HINT = "pip install --no-deps crypten==0.4.1 && pip install omegaconf onnx"


def crypten_installed() -> bool:
    """Whether a CrypTen package is present (without importing it, which is slow)."""
    return importlib.util.find_spec("crypten") is not None


def _install_onnx_stand_in() -> None:
    try:
        importlib.import_module(_ONNX_REGISTRATION)
    except ImportError:
        stand_in = types.ModuleType(_ONNX_REGISTRATION)
        stand_in.registry = None  # type: ignore[attr-defined]
        sys.modules[_ONNX_REGISTRATION] = stand_in


def import_crypten() -> Any:
    """Import and return the `crypten` module; ConfigError naming the fix if that fails."""
    if "crypten" in sys.modules:
        return sys.modules["crypten"]
    if not crypten_installed():
        raise ConfigError(f"the 'crypten' backend needs CrypTen; install it with: {INSTALL_HINT}")
    _install_onnx_stand_in()
    try:
        return importlib.import_module("crypten")
    except Exception as exc:  # CrypTen's import can fail in many ways on a new torch
        raise ConfigError(
            f"CrypTen is installed but cannot be imported ({type(exc).__name__}: {exc}); "
            f"reinstall it with: {INSTALL_HINT}"
        ) from exc
