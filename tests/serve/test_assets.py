"""The web page's assets: the vendored NiiVue bundle is the pinned npm file, its licence
notice ships, and the page loads nothing from another site."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from sammed3d.serve.app import static_dir

STATIC = Path(str(static_dir()))


def test_vendored_niivue_matches_its_manifest() -> None:
    manifest = json.loads((STATIC / "vendor" / "niivue.json").read_text(encoding="utf-8"))
    bundle = (STATIC / "vendor" / "niivue.umd.js").read_bytes()
    assert manifest["package"] == "@niivue/niivue" and manifest["version"] == "0.69.0"
    assert hashlib.sha256(bundle).hexdigest() == manifest["sha256"]
    assert len(bundle) == manifest["bytes"]
    notice = (STATIC / "vendor" / "NOTICE.md").read_text(encoding="utf-8")
    assert "BSD 2-Clause License" in notice and "Copyright (c) 2021, Niivue" in notice


def test_the_page_uses_local_files_only() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "static/vendor/niivue.umd.js" in sources and "static/app.js" in sources
    for src in sources:
        assert not re.match(r"^(https?:)?//", src), f"{src} would be fetched from another site"
    app_js = (STATIC / "app.js").read_text(encoding="utf-8")
    assert not re.search(r"https?://", app_js)
