"""``sammed3d weights``: the published weights by name; what is here; fetch ahead; verify a file.

    sammed3d weights                       # = list: names, files, sizes, hashes, where each is
    sammed3d weights download turbo        # into the Hugging Face cache (HF_HOME), verified
    sammed3d weights verify FILE_OR_NAME   # format, size, SHA-256 against the table, strict load

Any command that takes a checkpoint also takes these names and fetches on first use; this
command only does it ahead of time (e.g. before going offline) and shows the state.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sammed3d.cli import add_unsafe_pickle_arg

if TYPE_CHECKING:
    from sammed3d.weights import PublishedWeights

ACTIONS = ("list", "download", "verify")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=ACTIONS,
        help="list (default): names and what is here; download NAME...: fetch ahead of time; "
        "verify FILE_OR_NAME...: check a local file (or a name's cached file)",
    )
    parser.add_argument("targets", nargs="*", metavar="NAME_OR_FILE", help="names or files")
    parser.add_argument("--force", action="store_true", help="download: fetch again if cached")
    parser.add_argument(
        "--name", help="verify: compare FILE with this published name (default: by file name)"
    )
    parser.add_argument(
        "--no-load", action="store_true", help="verify: skip the strict load of the weights"
    )
    parser.add_argument("--json", action="store_true", help="list/verify: print JSON")
    add_unsafe_pickle_arg(parser)


def run(args: argparse.Namespace) -> int:
    from sammed3d.cli import CLIError

    if args.action == "list":
        if args.targets:
            raise CLIError("`weights list` takes no names; use `weights verify NAME`")
        return _list(args)
    if not args.targets:
        raise CLIError(f"`weights {args.action}` needs at least one name or file")
    if args.action == "download":
        return _download(args)
    return _verify(args)


def _list(args: argparse.Namespace) -> int:
    from sammed3d import weights
    from sammed3d.paths import sammed3d_home

    rows = []
    for entry in weights.WEIGHTS.values():
        st = weights.status(entry)
        rows.append(
            {
                "name": entry.name,
                "aliases": list(entry.aliases),
                "file": entry.filename,
                "size": entry.size,
                "size_text": entry.size_text,
                "sha256": entry.sha256,
                "licence": entry.licence,
                "source": entry.url if not entry.bundled else "the sammed3d package",
                "description": entry.description,
                "available": st.where or None,
                "path": str(st.path) if st.path else None,
            }
        )
    where = {
        "hf_cache": str(weights.hub_cache_dir()),
        "local_copies": str(sammed3d_home()),
        "endpoint": weights.hub_endpoint(),
        "offline": weights.hub_offline(),
    }
    if args.json:
        print(json.dumps({"weights": rows, **where}, indent=2))
        return 0
    print(f"{'name':<10} {'file':<22} {'size':<9} {'sha256':<14} {'licence':<11} here")
    for r in rows:
        size = r["size_text"] or (f"{r['size']:,} B" if r["size"] else "unknown")
        if r["available"] == "bundled" or r["source"] == "the sammed3d package":
            size, sha = (_human(Path(r["path"]).stat().st_size) if r["path"] else "-"), "(bundled)"
        else:
            sha = (r["sha256"][:12] + "..") if r["sha256"] else "unknown"
        here = f"{r['available']}: {r['path']}" if r["available"] else "not here"
        print(f"{r['name']:<10} {r['file']:<22} {size:<9} {sha:<14} {r['licence']:<11} {here}")
    print()
    for r in rows:
        aliases = f" (also: {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"  {r['name']}{aliases}: {r['description']}; from {r['source']}")
    print()
    print(f"downloads go to {where['hf_cache']} (HF_HOME / HF_HUB_CACHE), from {where['endpoint']}")
    print(f"local copies are looked for in {where['local_copies']} (SAMMED3D_HOME)")
    if where["offline"]:
        print("HF_HUB_OFFLINE is set: nothing will be downloaded")
    return 0


def _download(args: argparse.Namespace) -> int:
    from sammed3d import weights

    for name in args.targets:
        entry = weights.lookup(name)
        if entry is None:
            raise weights.WeightsError(
                f"unknown weights name {name!r}; known: {', '.join(weights.names())}"
            )
        path = weights.fetch(entry, force=args.force, progress=not args.no_progress)
        print(f"{entry.name}: {path} ({path.stat().st_size:,} bytes)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    reports = [_verify_one(t, args) for t in args.targets]
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2, default=str))
    else:
        for rep in reports:
            for key, value in rep.items():
                print(f"{key:>9}: {value}")
            if len(reports) > 1:
                print()
    return 0


def _verify_one(target: str, args: argparse.Namespace) -> dict[str, Any]:
    from sammed3d import weights
    from sammed3d.sniff import checkpoint_problem

    path = Path(target).expanduser()
    entry = weights.lookup(args.name) if args.name else None
    if args.name and entry is None:
        raise weights.WeightsError(
            f"unknown weights name {args.name!r}; known: {', '.join(weights.names())}"
        )
    if not path.exists():
        named = weights.lookup(target)
        if named is None:
            raise FileNotFoundError(f"no such file or published name: {target}")
        entry = entry or named
        found = weights.status(named).path
        if found is None:
            raise weights.WeightsError(
                f"{named.label} is not here; `sammed3d weights download {named.name}` fetches it"
            )
        path = found
    if path.is_dir():  # a training run folder: its newest checkpoint, as --checkpoint takes it
        from sammed3d.build import resolve_checkpoint_path

        path = resolve_checkpoint_path(path)
    if entry is None:
        entry = next(
            (w for w in weights.WEIGHTS.values() if w.filename == path.name and not w.bundled),
            None,
        )
    problem = checkpoint_problem(path)
    if problem is not None:
        raise weights.WeightsError(f"{path} {problem}")
    report: dict[str, Any] = {"file": str(path), "size": f"{path.stat().st_size:,} bytes"}
    digest = weights.sha256_of(path)
    report["sha256"] = digest
    if entry is None:
        known = weights.match_sha256(digest)
        if known is None:
            report["matches"] = (
                "no published file of this name or hash (pass --name NAME to compare)"
            )
        elif known.bundled:
            report["matches"] = f"{known.name}: {_bundled_match(known)}"
        else:
            report["matches"] = f"{known.name} (SHA-256 recorded in the table)"
    elif entry.bundled:
        expected = weights.bundled_sha256(entry)
        if expected is None:
            report["matches"] = (
                f"{entry.name}: cannot compare, the bundled {entry.filename} is not installed"
            )
        elif digest != expected:
            raise weights.WeightsError(
                f"{path} has SHA-256 {digest[:16]}..., not the {expected[:16]}... of the "
                f"bundled {entry.filename} ({weights.bundled_path(entry)}): a different file"
            )
        else:
            report["matches"] = f"{entry.name}: {_bundled_match(entry)}"
    else:
        checked = weights.verify_file(path, entry, rehash=True)
        if checked.hash_source == "table":
            report["matches"] = f"{entry.name}: size and SHA-256 as recorded"
        elif checked.hash_source == "host":
            report["matches"] = f"{entry.name}: SHA-256 as the host reported (none recorded)"
        else:
            report["matches"] = f"{entry.name}: no hash known, size/format only"
    if not args.no_load:
        from sammed3d.build import load_checkpoint

        model = load_checkpoint(path, allow_unsafe_pickle=args.allow_unsafe_pickle)
        n = sum(p.numel() for p in model.parameters())
        cfg = model.config
        report["loads"] = (
            f"yes, strictly: {n:,} parameters, encoder {cfg.encoder_embed_dim}x"
            f"{cfg.encoder_depth}, input {cfg.img_size}^3"
        )
    return report


def _bundled_match(entry: PublishedWeights) -> str:
    """What ``matches`` says of a file with the bundled asset's hash."""
    from sammed3d import weights

    return (
        f"the model bundled with sammed3d (same SHA-256 as the installed "
        f"{weights.bundled_path(entry)})"
    )


def _human(n: int) -> str:
    """Decimal units, as the Hub shows sizes (``6.6 MB``)."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
