#!/usr/bin/env python3
"""Vendor NiiVue's browser bundle for ``sammed3d serve``'s web page from the npm registry.

Fetches ``@niivue/niivue@<VERSION>`` with ``npm pack`` (the registry, no CDN), checks the
tarball against the pinned sha512 integrity, and writes ``dist/niivue.umd.js`` plus a
manifest with its sha256 into ``src/sammed3d/serve/static/vendor/``. The committed copy is
what the server serves, offline; rerun this only to change the pinned version (then update
VERSION and INTEGRITY from ``npm view @niivue/niivue@<version> dist.integrity``).

    python tools/vendor_niivue.py           # fetch, verify, write
    python tools/vendor_niivue.py --check   # verify the committed file against the manifest
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@niivue/niivue"
VERSION = "0.69.0"
INTEGRITY = (
    "sha512-YMjQvJgD1W2b7DuoxkwlC4VxbrgIePRJ5qyQzXKxi2v2MBVg285P/CIQyg46oDDGDIcaNlbd+MhtO/"
    "edMbXJkA=="
)
MEMBER = "package/dist/niivue.umd.js"
DEST = Path(__file__).resolve().parents[1] / "src" / "sammed3d" / "serve" / "static" / "vendor"
BUNDLE = "niivue.umd.js"
MANIFEST = "niivue.json"


def fetch(dest: Path = DEST) -> Path:
    with tempfile.TemporaryDirectory(prefix="niivue-") as tmp:
        out = subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", tmp],
            check=True,
            capture_output=True,
            text=True,
        )
        name = json.loads(out.stdout)[0]["filename"]
        tarball = Path(tmp) / name
        data = tarball.read_bytes()
        digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        if digest != INTEGRITY:
            sys.exit(f"error: {name} has integrity {digest}, expected {INTEGRITY}")
        with tarfile.open(tarball) as tar:
            member = tar.extractfile(MEMBER)
            if member is None:
                sys.exit(f"error: {MEMBER} not in {name}")
            bundle = member.read()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / BUNDLE).write_bytes(bundle)
    manifest = {
        "package": PACKAGE,
        "version": VERSION,
        "integrity": INTEGRITY,
        "file": MEMBER.removeprefix("package/"),
        "sha256": hashlib.sha256(bundle).hexdigest(),
        "bytes": len(bundle),
        "license": "BSD-2-Clause (see NOTICE.md)",
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return dest / BUNDLE


def check(dest: Path = DEST) -> bool:
    manifest = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    bundle = (dest / BUNDLE).read_bytes()
    return (
        manifest["version"] == VERSION and hashlib.sha256(bundle).hexdigest() == manifest["sha256"]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the committed bundle")
    args = parser.parse_args()
    if args.check:
        ok = check()
        print("ok" if ok else "MISMATCH: rerun tools/vendor_niivue.py")
        return 0 if ok else 1
    path = fetch()
    print(f"wrote {path} ({path.stat().st_size} bytes), {PACKAGE}@{VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
