"""Where sammed3d finds checkpoints: a path or a published name, and the default.

Resolved lazily (only when asked), never at import time. Every command and API that takes a
checkpoint goes through :func:`require_checkpoint` (``load_checkpoint`` and ``build_model`` do
too), so a published name works everywhere.

* A checkpoint argument is a file path, or a name from :data:`sammed3d.weights.WEIGHTS`
  (``turbo``, ``sam_med3d``, ``default``); an existing file of that name wins.
* ``$SAMMED3D_CHECKPOINT``: the checkpoint used when none is given (a path or a name).
* the bundled weights ``sammed3d/assets/sammed3d_default.pth``.
* ``$SAMMED3D_HOME`` (default ``~/.cache/sammed3d``): local copies of published weights placed by
  hand (``$SAMMED3D_HOME/sam_med3d_turbo.pth``) and the record of verified hashes. Downloads go
  to the Hugging Face cache (``HF_HOME``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: Environment variable naming the default checkpoint file.
ENV_CHECKPOINT = "SAMMED3D_CHECKPOINT"
#: Environment variable naming the folder of hand-placed published weights.
ENV_HOME = "SAMMED3D_HOME"
#: Where a release bundles its default weights (inside the installed package).
BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "sammed3d_default.pth"


def default_checkpoint() -> Path | None:
    """The checkpoint to use when the caller gives none.

    Returns:
        ``$SAMMED3D_CHECKPOINT`` if set (a path, or a published name, fetched if needed), else
        the bundled weights if installed, else None.

    Raises:
        FileNotFoundError: ``$SAMMED3D_CHECKPOINT`` is set but names no file and no weights.
        sammed3d.weights.WeightsError: it names published weights that cannot be fetched.
    """
    env = os.environ.get(ENV_CHECKPOINT, "").strip()
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return path
        from sammed3d import weights

        if weights.lookup(env) is not None:
            return weights.resolve(env)
        raise FileNotFoundError(
            f"${ENV_CHECKPOINT} is set to {env!r}, which is not a file nor a published name "
            f"({', '.join(weights.names())}); fix or unset it"
        )
    if BUNDLED_CHECKPOINT.is_file():
        return BUNDLED_CHECKPOINT
    return None


def require_checkpoint(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve a checkpoint argument to an existing file.

    Args:
        path: A file path; or a published name (``turbo``, ``sam_med3d``, ``default``, see
            :mod:`sammed3d.weights`), found locally or in the cache or downloaded and verified;
            or None for :func:`default_checkpoint`.

    Raises:
        FileNotFoundError: no such file nor name, or no default checkpoint.
        sammed3d.weights.WeightsError: a published name that cannot be fetched or verified
            (one line: what to fetch from where, or where a local copy goes).
    """
    if path is None:
        found = default_checkpoint()
        if found is None:
            raise FileNotFoundError(
                f"no checkpoint given: pass one (CLI: --checkpoint CKPT or a published name such "
                f"as turbo) or set ${ENV_CHECKPOINT}; no bundled weights are installed"
            )
        return found
    text = os.fspath(path)
    p = Path(text).expanduser()
    if p.exists():
        return p
    from sammed3d import weights

    if weights.lookup(text) is not None:
        return weights.resolve(text)
    hint = ""
    published = {w.filename: w.name for w in weights.WEIGHTS.values() if not w.bundled}
    if p.name in published:
        hint = f" (to fetch the published file, pass its name: --checkpoint {published[p.name]})"
    elif weights.looks_like_name(text):
        hint = f" (not a published name either: {', '.join(weights.names())})"
    raise FileNotFoundError(f"checkpoint not found: {p}{hint}")


def sammed3d_home() -> Path:
    """Folder for local copies of published weights and the record of verified hashes:
    ``$SAMMED3D_HOME``, else ``~/.cache/sammed3d`` (not created here)."""
    env = os.environ.get(ENV_HOME, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sammed3d"
