"""Where sammed3d finds things on disk: the default checkpoint and the weights cache.

Resolved lazily (only when asked), never at import time.

* ``$SAMMED3D_CHECKPOINT``: the checkpoint used when none is given (CLI ``--checkpoint``).
* the bundled weights ``sammed3d/assets/sammed3d_default.pth``, once a release ships them.
* ``$SAMMED3D_HOME``: cache folder for downloaded weights (default ``~/.cache/sammed3d``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: Environment variable naming the default checkpoint file.
ENV_CHECKPOINT = "SAMMED3D_CHECKPOINT"
#: Environment variable naming the weights cache folder.
ENV_HOME = "SAMMED3D_HOME"
#: Where a release bundles its default weights (inside the installed package).
BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "sammed3d_default.pth"


def default_checkpoint() -> Path | None:
    """The checkpoint to use when the caller gives none.

    Returns:
        ``$SAMMED3D_CHECKPOINT`` if set, else the bundled weights if installed, else None.

    Raises:
        FileNotFoundError: ``$SAMMED3D_CHECKPOINT`` is set but names no file.
    """
    env = os.environ.get(ENV_CHECKPOINT, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"${ENV_CHECKPOINT} is set to {env!r}, which is not a file; fix or unset it"
            )
        return path
    if BUNDLED_CHECKPOINT.is_file():
        return BUNDLED_CHECKPOINT
    return None


def require_checkpoint(path: str | os.PathLike[str] | None = None) -> Path:
    """``path`` if given (it must exist), else :func:`default_checkpoint`, else an error.

    Raises:
        FileNotFoundError: the file does not exist, or there is no default checkpoint.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"checkpoint not found: {p}")
        return p
    found = default_checkpoint()
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint given: pass one (CLI: --checkpoint CKPT) or set ${ENV_CHECKPOINT}; "
            "no bundled weights are installed"
        )
    return found


def sammed3d_home() -> Path:
    """Cache folder for weights: ``$SAMMED3D_HOME``, else ``~/.cache/sammed3d`` (not created)."""
    env = os.environ.get(ENV_HOME, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sammed3d"
