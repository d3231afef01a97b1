"""Optional dependencies (the packages' extras), imported on first use with one message for a
missing one everywhere: what needs it and the exact ``pip install`` line.

    tb = require("torch.utils.tensorboard", extra="tensorboard", purpose="train.tensorboard=true")

:class:`MissingExtraError` is an ``ImportError`` (code that catches ImportError keeps working)
and the ``jepa`` command prints it as one line with exit status 2, before anything is trained.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require", "install_hint"]


class MissingExtraError(ImportError):
    """An optional dependency that is not installed; the message names the extra to install."""


def install_hint(extra: str, package: str = "jepa-core") -> str:
    return f"pip install '{package}[{extra}]'"


def require(module: str, *, extra: str, purpose: str, package: str = "jepa-core") -> ModuleType:
    """``importlib.import_module(module)``, or a :class:`MissingExtraError`: ``<purpose> needs
    <distribution>, which is not installed: pip install '<package>[<extra>]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise MissingExtraError(f"{purpose} needs {top}, which is not installed: {install_hint(extra, package)}"
                                f" ({e.__class__.__name__}: {e})") from None
