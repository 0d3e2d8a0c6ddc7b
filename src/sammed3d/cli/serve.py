"""``sammed3d serve``: an nnInteractive-compatible server and a web page for clicking.

Example::

    sammed3d serve                          # http://127.0.0.1:1527/  (web page)
    sammed3d serve ct.nii.gz --modality CT --checkpoint sam_med3d_turbo.pth

3D Slicer (SlicerNNInteractive, remote mode) and napari (napari-nninteractive) connect to
the printed URL; a browser opens the same URL for the web page. See docs/serve.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from sammed3d.cli import (
    add_device_arg,
    add_extension_args,
    add_irregular_slices_arg,
    add_modality_arg,
    add_rule_args,
    add_unsafe_pickle_arg,
    check_max_rois,
    check_rule_args,
    rule_kwargs,
)

logger = logging.getLogger(__name__)

ENV_API_KEY = "SAMMED3D_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Addresses that mean "every interface": not an address a browser can open.
ANY_ADDRESS = ("0.0.0.0", "::", "")


def browser_url(host: str, port: int) -> tuple[str, bool]:
    """The URL a browser on this machine can open for a server bound to ``host:port``, and
    whether it listens on all interfaces (``0.0.0.0``, ``::``: shown as ``localhost``)."""
    if host in ANY_ADDRESS:
        return f"http://localhost:{port}", True
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}", False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "volumes",
        nargs="*",
        metavar="VOLUME",
        help="image files the web page offers to open (NIfTI, NRRD, MHA, DICOM folder); each "
        "is checked at start-up (read in full up to 256 MiB, else its header)",
    )
    add_irregular_slices_arg(parser, "for the VOLUME folders; the page's masks are on that grid")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it "
        "to the network, use an API key then)",
    )
    parser.add_argument(
        "--port", type=int, default=1527, help="port (default 1527, nnInteractive's; 0: any free)"
    )
    parser.add_argument(
        "--checkpoint",
        help="model checkpoint: a file, a published name or a training run folder (default: "
        "$SAMMED3D_CHECKPOINT, then the bundled weights)",
    )
    add_unsafe_pickle_arg(parser)
    parser.add_argument(
        "--api-key",
        help=f"require 'Authorization: Bearer KEY' on every request (default: ${ENV_API_KEY}; "
        "prefer the variable, command lines are visible to other users)",
    )
    parser.add_argument(
        "--max-sessions", type=int, default=4, help="clients served at once (default 4)"
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=2048.0,
        help="largest upload and largest decoded image in MiB (default 2048)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        help="seconds without a user action before a session is freed (default 600)",
    )
    parser.add_argument(
        "--liveness-timeout",
        type=float,
        default=60.0,
        help="seconds without any request (heartbeats count) before a session is freed "
        "(default 60)",
    )
    parser.add_argument(
        "--orientation",
        default="SPL",
        metavar="CODE",
        help="where the axes of protocol images point when no affine is sent: SPL = 3D Slicer "
        "(default), SAR = napari with napari-nifti, RAS, LPS, ...; see docs/serve.md",
    )
    add_modality_arg(
        parser,
        "default image modality; CT clamps intensities to [-1000, 1000] (default: none for "
        "protocol images, the file's metadata for web uploads; the web page can choose one "
        "per image)",
    )
    parser.add_argument(
        "--weights-license",
        help="licence of the weights reported to clients (default: Apache-2.0 for the bundled "
        "weights, otherwise unknown)",
    )
    add_extension_args(
        parser, "do not extend objects beyond one ROI (clients can toggle it: autozoom)"
    )
    add_rule_args(parser)
    add_device_arg(parser)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sammed3d.cli import CLIError

    try:
        import uvicorn

        from sammed3d.serve.app import create_app
        from sammed3d.serve.config import ServeConfig
    except ImportError as exc:
        raise CLIError(
            f"sammed3d serve needs FastAPI, uvicorn and blosc2 ({exc.name} is missing): "
            "pip install fastapi uvicorn blosc2"
        ) from None
    import torch

    from sammed3d.build import load_checkpoint
    from sammed3d.inference.predictor import SamMed3DPredictor
    from sammed3d.io import VolumeError
    from sammed3d.paths import BUNDLED_CHECKPOINT
    from sammed3d.serve.images import check_startup_volume
    from sammed3d.serve.orientation import parse_orientation

    orientation = parse_orientation(args.orientation)
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    check_max_rois(args.max_rois)
    check_rule_args(args)
    if not 0 < args.max_upload_mb < float("inf"):
        raise CLIError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    max_upload_bytes = int(args.max_upload_mb * 2**20)
    volumes = []
    for v in args.volumes:
        path = Path(v).expanduser()
        if not path.exists():
            raise CLIError(f"volume not found: {v}")
        try:  # a bad file fails now, not when someone opens it on the page
            check_startup_volume(path, max_upload_bytes, irregular_slices=args.irregular_slices)
        except (OSError, VolumeError) as exc:
            message = " ".join(str(exc).split()).removeprefix("cannot read ")
            if v not in message and str(path) not in message:
                message = f"{v}: {message}"
            raise CLIError(f"cannot serve volume {message}") from None
        volumes.append(path.resolve())
    api_key = args.api_key if args.api_key is not None else os.environ.get(ENV_API_KEY) or None
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    from sammed3d.devices import resolve_device

    device = resolve_device(args.device)

    # resolves --checkpoint (a file, a published name, the default) once
    model = load_checkpoint(
        args.checkpoint, device=device, allow_unsafe_pickle=args.allow_unsafe_pickle
    )
    ckpt = Path(model.checkpoint_path)
    license_ = args.weights_license
    if license_ is None:
        bundled = ckpt.resolve() == BUNDLED_CHECKPOINT.resolve()
        license_ = "Apache-2.0" if bundled else "!!MISSING!!"
    config = ServeConfig(
        api_key=api_key,
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout,
        liveness_timeout=args.liveness_timeout,
        sweep_interval=min(5.0, args.liveness_timeout / 4),
        max_upload_bytes=max_upload_bytes,
        orientation=orientation,
        modality=args.modality,
        weights_license=license_,
        model_name=ckpt.name,
        volumes=tuple(volumes),
        irregular_slices=args.irregular_slices,
        allowed_hosts=LOOPBACK + (args.host,) if args.host in LOOPBACK else None,
    )

    def make_predictor() -> SamMed3DPredictor:
        return SamMed3DPredictor(
            model,
            device=device,
            extend=not args.no_extend,
            max_rois=args.max_rois,
            **rule_kwargs(args),
        )

    app = create_app(make_predictor, config)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    url, everywhere = browser_url(host, port)
    print(f"sammed3d serve: {ckpt.name} on {device}, up to {config.max_sessions} sessions")
    print(f"  web page:                 {url}/")
    print(f"  nnInteractive server URL: {url}   (3D Slicer / napari, remote mode)")
    print(f"  inference rules:          {make_predictor().rules_summary()}")
    if everywhere:
        print(
            f"  listening on all interfaces ({host or '*'}): from another machine use this "
            f"machine's name or address, e.g. http://{socket.gethostname()}:{port}/"
        )
    if api_key:
        print("  API key required (Authorization: Bearer ...)")
    elif args.host not in LOOPBACK:
        print(
            f"  WARNING: listening on {args.host} without an API key: anyone who can reach "
            f"this port can use it; set ${ENV_API_KEY} or --api-key",
            file=sys.stderr,
        )
    sys.stdout.flush()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="info" if args.verbose else "warning",
            access_log=bool(args.verbose),
            timeout_graceful_shutdown=5,
        )
    )
    server.run(sockets=[sock])
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line error (address in use, unknown host...)."""
    from sammed3d.cli import CLIError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CLIError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only then,
    # and without it small replies wait ~40 ms for a delayed ACK (Nagle's algorithm)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
