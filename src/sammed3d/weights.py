"""Published SAM-Med3D weights by name: one table, fetched with ``huggingface_hub``, verified.

``--checkpoint turbo`` (or ``load_checkpoint("turbo")``) resolves through :data:`WEIGHTS` to a
file, in this order:

1. a local copy ``$SAMMED3D_HOME/<file>`` (default ``~/.cache/sammed3d/<file>``): for machines
   without internet, put the file there by hand;
2. the Hugging Face cache (``huggingface_hub`` layout; ``HF_HUB_CACHE``, else ``$HF_HOME/hub``,
   else ``~/.cache/huggingface/hub``), used without any network request;
3. a download with ``huggingface_hub.hf_hub_download`` (progress bar; ``HF_ENDPOINT`` selects a
   mirror; never when ``HF_HUB_OFFLINE=1``).

Every file is checked before ``torch.load`` sees it: its bytes must look like a PyTorch
checkpoint (an HTML page or a truncated archive is refused, :mod:`sammed3d.sniff`), its size and
SHA-256 must match the table where known, and otherwise the SHA-256 the host reported (the Git
LFS object id, which names the cached blob). A download that fails verification is removed from
the cache; a partial download is never used (``huggingface_hub`` writes to a temporary file and
renames it only when complete). Failures are one :class:`WeightsError` line that says what to
fetch from where, or where to put a local copy.

The environment variables are read at call time (not at import), so a long-running process and
the tests see changes.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import os
import re
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The authors' Hugging Face repository (model card: licence apache-2.0).
HF_REPO = "blueyo0/SAM-Med3D"
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TRUE = {"1", "on", "yes", "true"}


#: Progress-bar default for downloads in this context (None: huggingface_hub's own default).
#: The CLI sets it from ``--no-progress`` through :func:`progress_bars`.
PROGRESS: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "sammed3d_download_progress", default=None
)


@contextlib.contextmanager
def progress_bars(enabled: bool | None) -> Iterator[None]:
    """Within the block, downloads show a progress bar (True), none (False) or the default."""
    token = PROGRESS.set(enabled)
    try:
        yield
    finally:
        PROGRESS.reset(token)


class WeightsError(ValueError):
    """Published weights cannot be found, fetched or verified (one-line message)."""


@dataclass(frozen=True)
class PublishedWeights:
    """One row of the weights table.

    Attributes:
        name: What users type (``--checkpoint NAME``).
        filename: The file's name on the host (and of a local copy).
        description: One line for ``sammed3d weights list``.
        aliases: Other accepted names.
        repo_id: Hugging Face repository; None when the file is not on the Hub.
        revision: Branch, tag or commit on the Hub.
        size: Exact size in bytes; None when unknown (then the host's size is checked).
        size_text: The size as the host displays it (e.g. ``"402 MB"``), for messages.
        sha256: Expected SHA-256 (hex); None when unknown (then the host's LFS hash is checked).
        licence: SPDX licence of the weights.
        source: Where ``size``/``sha256`` were read.
        manual_url: Where to fetch the file by hand when it is not on the Hub.
        needs_unsafe_pickle: The file pickles Python objects (``--allow-unsafe-pickle``).
        bundled: Shipped inside the package (``sammed3d/assets``), nothing to fetch.
        architecture: Its registry name (:data:`sammed3d.MODEL_REGISTRY`), so that a command
            can refuse a name that cannot fit its model before fetching the file.
    """

    name: str
    filename: str
    description: str
    aliases: tuple[str, ...] = ()
    repo_id: str | None = None
    revision: str = "main"
    size: int | None = None
    size_text: str | None = None
    sha256: str | None = None
    licence: str = "Apache-2.0"
    source: str = ""
    manual_url: str | None = None
    needs_unsafe_pickle: bool = False
    bundled: bool = False
    architecture: str | None = None

    @property
    def url(self) -> str | None:
        """Direct download URL on the Hub (honours ``HF_ENDPOINT``), or ``manual_url``."""
        if self.repo_id is None:
            return self.manual_url
        return f"{hub_endpoint()}/{self.repo_id}/resolve/{self.revision}/{self.filename}"

    @property
    def label(self) -> str:
        """``turbo (sam_med3d_turbo.pth, 402 MB)`` for messages."""
        extra = f", {self.size_text}" if self.size_text else ""
        return f"{self.name} ({self.filename}{extra})"


#: The weights table. Sizes and hashes are what the host shows; "unknown" stays None.
WEIGHTS: dict[str, PublishedWeights] = {
    w.name: w
    for w in (
        PublishedWeights(
            name="turbo",
            aliases=("sam_med3d_turbo",),
            filename="sam_med3d_turbo.pth",
            description="SAM-Med3D-turbo, the published ViT-B fine-tuned on 44 datasets "
            "(recommended)",
            repo_id=HF_REPO,
            architecture="sam_med3d_turbo",
            size_text="402 MB",
            sha256="899a46d04d3b70f723282ceb489149373558bf0aaba389a346f5ab57da5cdd3c",
            source="Hub file page, Git LFS details (file last changed in commit 07f6f69, "
            "'Update SAM-Med3D ckpt with new Torch Version', 2024-09-07); exact byte count "
            "not shown there",
        ),
        PublishedWeights(
            name="sam_med3d",
            filename="sam_med3d.pth",
            description="the original SAM-Med3D (2023); not on the Hub, Google Drive only",
            manual_url="https://drive.google.com/file/d/1PFeUjlFMAppllS9x1kAWyCYUJM9re2Ub/view",
            needs_unsafe_pickle=True,
            architecture="sam_med3d",
            source="authors' README (checkpoint table); size and hash not published",
        ),
        PublishedWeights(
            name="default",
            aliases=("bundled", "demo"),
            filename="sammed3d_default.pth",
            description="the small demonstration model bundled with sammed3d",
            bundled=True,
            architecture="sam_med3d_demo",
            source="ships inside the package (sammed3d/assets)",
        ),
    )
}


def names() -> list[str]:
    """Every accepted name and alias, sorted."""
    return sorted({n for w in WEIGHTS.values() for n in (w.name, *w.aliases)})


def lookup(name: str) -> PublishedWeights | None:
    """The table row for a name or alias (case-insensitive), or None."""
    key = name.strip().lower()
    for w in WEIGHTS.values():
        if key == w.name or key in w.aliases:
            return w
    return None


def looks_like_name(text: str) -> bool:
    """Whether ``text`` could be meant as a name rather than a path (no folder, no suffix)."""
    return bool(text) and "/" not in text and os.sep not in text and "." not in text


# ------------------------------------------------------------------------------------------
# where things live (environment read at call time)


def _env_true(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in _TRUE


def hub_endpoint() -> str:
    """``$HF_ENDPOINT`` (a mirror) or ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT", "").strip() or HF_DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: caches and local copies only."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hub_cache_dir() -> Path:
    """The ``huggingface_hub`` cache folder, resolved as the library does."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var, "").strip():
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME", "").strip():
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def local_copy_path(entry: PublishedWeights) -> Path:
    """Where a hand-placed copy is looked for: ``$SAMMED3D_HOME/<filename>``."""
    from sammed3d.paths import sammed3d_home

    return sammed3d_home() / entry.filename


def bundled_path(entry: PublishedWeights) -> Path:
    """The file shipped inside the package (``sammed3d/assets``)."""
    from sammed3d import paths

    return paths.BUNDLED_CHECKPOINT


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsError(
            "downloading published weights needs huggingface_hub (pip install huggingface_hub)"
        ) from None
    return huggingface_hub


def cached_path(entry: PublishedWeights) -> Path | None:
    """The file in the Hugging Face cache, if there (no network request)."""
    if entry.repo_id is None:
        return None
    try:
        hub = _hub()
    except WeightsError:
        return None
    found = hub.try_to_load_from_cache(
        entry.repo_id, entry.filename, cache_dir=str(hub_cache_dir()), revision=entry.revision
    )
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


# ------------------------------------------------------------------------------------------
# verification


def sha256_of(path: str | os.PathLike[str], *, chunk: int = 1 << 22) -> str:
    """SHA-256 (hex) of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundled_sha256(entry: PublishedWeights) -> str | None:
    """SHA-256 of the file shipped inside the package for a bundled entry, hashed from the
    installed asset itself (no hash is recorded for it: it changes with each release); None for
    an entry that is not bundled or whose asset is missing."""
    if not entry.bundled:
        return None
    try:
        return sha256_cached(bundled_path(entry))
    except OSError:
        return None


def sha256_cached(path: str | os.PathLike[str]) -> str:
    """:func:`sha256_of`, computed once per process for a file of a given size and
    modification time (a run that identifies a checkpoint and names its model hashes it once).

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path).resolve()
    st = path.stat()
    return _hash_once(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _hash_once(path: str, size: int, mtime_ns: int) -> str:
    """:func:`sha256_of`, once per process for a file of this size and modification time."""
    return sha256_of(path)


def match_sha256(digest: str) -> PublishedWeights | None:
    """The table entry whose file has this SHA-256: a recorded hash, or the installed bundled
    asset's (:func:`bundled_sha256`); None if none has it."""
    for entry in WEIGHTS.values():
        if entry.sha256 == digest:
            return entry
    for entry in WEIGHTS.values():
        if entry.bundled and bundled_sha256(entry) == digest:
            return entry
    return None


def _memo_file() -> Path:
    from sammed3d.paths import sammed3d_home

    return sammed3d_home() / "verified.json"


def _memo_key(path: Path) -> tuple[str, str]:
    st = path.stat()
    return str(path.resolve()), f"{st.st_size}:{st.st_mtime_ns}"


def _memo_get(path: Path) -> str | None:
    try:
        memo = json.loads(_memo_file().read_text())
        key, stamp = _memo_key(path)
        rec = memo.get(key)
        if isinstance(rec, dict) and rec.get("stamp") == stamp:
            return str(rec.get("sha256"))
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _memo_put(path: Path, digest: str) -> None:
    """Remember a file's hash by (path, size, mtime), so a local copy is hashed once."""
    from sammed3d.io import atomic_write_text

    try:
        memo_path = _memo_file()
        try:
            memo = json.loads(memo_path.read_text())
            memo = memo if isinstance(memo, dict) else {}
        except (OSError, ValueError):
            memo = {}
        key, stamp = _memo_key(path)
        memo[key] = {"stamp": stamp, "sha256": digest}
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo_path, json.dumps(memo, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only home only costs a re-hash next time
        logger.debug("could not record the hash of %s: %s", path, exc)


@dataclass(frozen=True)
class Verified:
    """What :func:`verify_file` checked."""

    path: Path
    size: int
    sha256: str | None
    expected_sha256: str | None
    hash_source: str  # "table", "host" or "none"


def verify_file(
    path: str | os.PathLike[str], entry: PublishedWeights, *, rehash: bool = False
) -> Verified:
    """Check that ``path`` is the file ``entry`` describes.

    Checks, in order: the bytes look like a PyTorch checkpoint (:mod:`sammed3d.sniff`); the size
    equals ``entry.size`` (if known); the SHA-256 equals ``entry.sha256``, or, when the table has
    none, the host's LFS hash that names a Hugging Face cache blob. A cache blob already named by
    the expected hash, or a file hashed before with the same size and mtime, is not re-read unless
    ``rehash``.

    Raises:
        WeightsError: the file is something else (message: what it looks like or which check).
    """
    from sammed3d.sniff import checkpoint_problem

    p = Path(path)
    try:
        problem = checkpoint_problem(p)
        size = p.stat().st_size
    except OSError as exc:
        raise WeightsError(f"{p} cannot be read: {exc.strerror or exc}") from None
    if problem is not None:
        raise WeightsError(f"{p} {problem}")
    if entry.size is not None and size != entry.size:
        raise WeightsError(
            f"{p} is {size:,} bytes, but {entry.filename} is {entry.size:,} bytes: "
            "a truncated or different file"
        )
    blob = p.resolve().name
    host_hash = blob if _SHA256_RE.fullmatch(blob) and p.is_symlink() else None
    expected = entry.sha256 or host_hash
    source = "table" if entry.sha256 else ("host" if host_hash else "none")
    if expected is None:
        return Verified(p, size, None, None, source)
    digest: str | None = None
    if not rehash:
        digest = expected if host_hash == expected else _memo_get(p)
    if digest is None:
        logger.info("checking the SHA-256 of %s (%s bytes) ...", p.name, f"{size:,}")
        digest = sha256_of(p)
        if digest == expected:
            _memo_put(p, digest)
    if digest != expected:
        if entry.sha256 and digest == host_hash:
            raise WeightsError(
                f"the host now serves a different {entry.filename} (SHA-256 {digest[:16]}...) "
                f"than the one this sammed3d version knows ({expected[:16]}...); refusing it: "
                "update sammed3d, or fetch the file yourself and pass its path to use it anyway"
            )
        what = "recorded for" if entry.sha256 else "the host reported for"
        raise WeightsError(
            f"{p} has SHA-256 {digest[:16]}..., not the {expected[:16]}... {what} "
            f"{entry.filename}: a damaged or different file"
        )
    return Verified(p, size, digest, expected, source)


# ------------------------------------------------------------------------------------------
# fetching


def resolve(name: str, *, force: bool = False, progress: bool | None = None) -> Path:
    """The verified file for a published name, fetching it on first use.

    Args:
        name: A name or alias from :data:`WEIGHTS` (``turbo``, ``sam_med3d``, ``default``).
        force: Download again even if cached.
        progress: Show a download progress bar (None: unless ``HF_HUB_DISABLE_PROGRESS_BARS``).

    Raises:
        WeightsError: unknown name, not available offline, download failed, or the file failed
            verification (one line saying what to fetch from where).
    """
    entry = lookup(name)
    if entry is None:
        raise WeightsError(f"unknown weights name {name!r}; known: {', '.join(names())}")
    return fetch(entry, force=force, progress=progress)


def fetch(entry: PublishedWeights, *, force: bool = False, progress: bool | None = None) -> Path:
    """See :func:`resolve` (this takes the table row)."""
    if entry.bundled:
        path = bundled_path(entry)
        if not path.is_file():
            raise WeightsError(f"{entry.label} is not installed with this copy of sammed3d")
        return path
    local = local_copy_path(entry)
    if local.is_file() and not force:
        verify_file(local, entry)  # a user's own file is never deleted: only refused
        logger.debug("using the local copy %s", local)
        return local
    if entry.repo_id is None:
        raise WeightsError(
            f"{entry.label} is not on the Hugging Face Hub: download it from {entry.manual_url} "
            f"and save it as {local} ($SAMMED3D_HOME), or pass its path"
            + (" (it needs --allow-unsafe-pickle)" if entry.needs_unsafe_pickle else "")
        )
    cached = None if force else cached_path(entry)
    if cached is not None:
        try:
            verify_file(cached, entry)
            return cached
        except WeightsError as exc:
            _discard(cached)
            if hub_offline():
                raise WeightsError(
                    f"the cached {entry.filename} was damaged and has been removed ({exc}); "
                    f"HF_HUB_OFFLINE is set, so it cannot be fetched again: {_how_to_get(entry)}"
                ) from None
            logger.warning(
                "the cached %s failed verification (%s); downloading it again", entry.filename, exc
            )
    if hub_offline():
        raise WeightsError(
            f"{entry.label} is not in the cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set: "
            f"run `sammed3d weights download {entry.name}` once online, or "
            f"{_how_to_get(entry)}"
        )
    path = _download(entry, force=force, progress=progress)
    try:
        checked = verify_file(path, entry, rehash=True)
    except WeightsError:
        _discard(path)
        raise
    logger.info(
        "downloaded %s (%s bytes, sha256 %s) to %s",
        entry.filename,
        f"{checked.size:,}",
        checked.sha256 or "not checked: no hash known",
        path,
    )
    return path


def _how_to_get(entry: PublishedWeights) -> str:
    return (
        f"fetch {entry.url} yourself and save it as {local_copy_path(entry)} "
        "($SAMMED3D_HOME), or pass its path"
    )


#: Failures of a transfer already under way (no HTTP status to blame): worth another attempt,
#: which resumes where the data stopped (huggingface_hub's ``Range`` requests; versions that
#: do not resume within one call resume from their ``.incomplete`` file on the next).
_TRANSIENT = frozenset(
    {
        "ChunkedEncodingError",
        "IncompleteRead",
        "ProtocolError",
        "RemoteProtocolError",
        "ReadError",
        "ReadTimeout",
        "ReadTimeoutError",
        "ConnectionResetError",
    }
)
_ATTEMPTS = 3


def _check_reachable(entry: PublishedWeights) -> None:
    """Fail at once, in one line, when the Hub's host name does not resolve (no network, a
    typo in ``HF_ENDPOINT``), instead of huggingface_hub retrying for ~30 s.

    Raises:
        WeightsError: the host cannot be resolved.
    """
    parts = urllib.parse.urlsplit(hub_endpoint())
    host = parts.hostname
    if not host:
        raise WeightsError(f"HF_ENDPOINT is not a URL: {hub_endpoint()!r}")
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return  # behind a proxy the name is resolved by the proxy, not here
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise WeightsError(
            f"cannot reach {hub_endpoint()} to download {entry.label} (host {host!r}: "
            f"{reason.lower()}; no network?); {_how_to_get(entry)}"
        ) from None


@contextlib.contextmanager
def _quiet_hub_retries() -> Iterator[None]:
    """Hide huggingface_hub's own retry warnings: a failure ends in our one-line error, and
    our retries (:data:`_ATTEMPTS`) are logged once each."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _download(entry: PublishedWeights, *, force: bool, progress: bool | None) -> Path:
    hub = _hub()
    _check_reachable(entry)
    logger.info("downloading %s from %s/%s ...", entry.label, hub_endpoint(), entry.repo_id)
    endpoint = os.environ.get("HF_ENDPOINT", "").strip() or None
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with _progress_bars(progress), _quiet_hub_retries():
                found = hub.hf_hub_download(
                    entry.repo_id,
                    entry.filename,
                    revision=entry.revision,
                    cache_dir=str(hub_cache_dir()),
                    endpoint=endpoint.rstrip("/") if endpoint else None,
                    force_download=force,
                )
            return Path(found)
        except Exception as exc:  # network, HTTP, disk: all become one line
            if attempt < _ATTEMPTS and _is_transient(exc):
                logger.warning(
                    "download of %s interrupted (%s); trying again (%d/%d)",
                    entry.filename,
                    _reason(exc),
                    attempt + 1,
                    _ATTEMPTS,
                )
                time.sleep(1.0)
                continue
            raise WeightsError(
                f"could not download {entry.label} from {hub_endpoint()}: {_reason(exc)}; "
                f"{_how_to_get(entry)}"
            ) from None
    raise AssertionError("unreachable")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 8 and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _is_transient(exc: BaseException) -> bool:
    chain = _chain(exc)
    if any(getattr(getattr(e, "response", None), "status_code", None) for e in chain):
        return False  # the server answered: retrying will not change its mind
    return any(
        type(e).__name__ in _TRANSIENT or str(e).startswith("Consistency check failed")
        for e in chain
    )


def _reason(exc: BaseException) -> str:
    """The first useful line of a download error (huggingface_hub chains the real cause)."""
    chain = _chain(exc)
    status = None
    for e in chain:
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if status is not None:
            break
    root = chain[-1]
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    if status is not None:
        return f"HTTP {status} ({type(exc).__name__})"
    if root is not exc:
        return f"{type(root).__name__}: {text[:160]}"
    return f"{type(exc).__name__}: {text[:160]}"


@contextlib.contextmanager
def _progress_bars(progress: bool | None) -> Iterator[None]:
    """Turn huggingface_hub's progress bars off for the block when ``progress`` is False."""
    if progress is None:
        progress = PROGRESS.get()
    if progress is not False:
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _discard(path: Path) -> None:
    """Remove a refused file from the Hugging Face cache (snapshot link and blob)."""
    try:
        target = path.resolve()
        path.unlink(missing_ok=True)
        if target != path:
            target.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc)


# ------------------------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class Status:
    """Where a table entry is available on this machine (no network, no hashing)."""

    entry: PublishedWeights
    path: Path | None
    where: str  # "bundled", "local copy", "cache", "" (not available)


def status(entry: PublishedWeights) -> Status:
    """Which file :func:`fetch` would use now, without network or hashing."""
    if entry.bundled:
        path = bundled_path(entry)
        return Status(entry, path, "bundled") if path.is_file() else Status(entry, None, "")
    local = local_copy_path(entry)
    if local.is_file():
        return Status(entry, local, "local copy")
    cached = cached_path(entry)
    if cached is not None:
        return Status(entry, cached, "cache")
    return Status(entry, None, "")
