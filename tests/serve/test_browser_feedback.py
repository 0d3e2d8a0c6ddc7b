"""The web page's feedback in headless Chromium (see ``test_browser.py``): the busy state
(status line, progress cursor, a click made meanwhile is reported, not silently dropped),
the modality selector, and the E key when there is no other extent."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import pytest

from sammed3d.inference import SamMed3DPredictor
from sammed3d.serve.app import create_app
from sammed3d.serve.config import ServeConfig
from tests.serve.helpers import BlobModel
from tests.serve.test_browser import (
    bright_boxes,
    canvas_rgb,
    pytestmark,  # noqa: F401  (skipped without Chromium; slow)
    wait_idle,
    web_page,
)
from tests.serve.test_web import AFFINE, web_image

SLOW_S = 2.0


class SlowBlobModel(BlobModel):
    """:class:`BlobModel` that takes :data:`SLOW_S` per decode (a click on a slow machine)."""

    slow = False

    def decode(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        if SlowBlobModel.slow:
            time.sleep(SLOW_S)
        return super().decode(*args, **kwargs)


def test_busy_feedback_modality_and_e_key(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="PyPI playwright not installed")
    path = tmp_path / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(web_image(), AFFINE), path)
    app = create_app(lambda: SamMed3DPredictor(SlowBlobModel(32)), ServeConfig(volumes=(path,)))
    SlowBlobModel.slow = False
    with web_page(sync_api, app) as (page, errors):
        try:
            assert "modality not set" in page.inner_text("#volume-info")
            options = page.eval_on_selector_all("#modality option", "os => os.map(o => o.text)")
            assert options[0] == "as the server was started (not set)"
            assert options[1:] == ["CT", "MR", "PET", "SPECT", "US", "XR"]

            # a modality chosen on the page goes with the next open
            page.select_option("#modality", "CT")
            page.click("#open")
            wait_idle(page)
            info = page.inner_text("#volume-info")
            assert "modality CT (chosen, clamped to [−1000, 1000])" in info, info

            # E with no other extent: says why, changes nothing
            assert page.is_disabled("#extent")
            page.focus("#gl")
            page.keyboard.press("e")
            status = page.inner_text("#status")
            assert status.startswith("E: ") and "one mask per click" in status, status

            # a slow click: busy status and cursor; a second click meanwhile is reported
            page.select_option("#view", "axial")
            page.wait_for_timeout(300)
            rgb, box = canvas_rgb(page)
            (ax, ay, _), (bx, by, _) = bright_boxes(rgb)
            SlowBlobModel.slow = True
            page.mouse.click(box["x"] + ax, box["y"] + ay)
            page.wait_for_function("document.body.dataset.state === 'busy'", timeout=5_000)
            assert page.inner_text("#status") == "segmenting… (click 1)"
            cursor = page.eval_on_selector("#gl", "el => getComputedStyle(el).cursor")
            assert cursor == "progress"
            page.mouse.click(box["x"] + bx, box["y"] + by)
            status = page.inner_text("#status")
            assert status.startswith("click ignored: still segmenting… (click 1)"), status
            wait_idle(page, 1)
            SlowBlobModel.slow = False
            assert page.eval_on_selector("#gl", "el => getComputedStyle(el).cursor") == "crosshair"
            assert "click at voxel" in page.inner_text("#status")
            assert page.evaluate("window.sammed3d.state.clicks") == 1  # the second was dropped
            assert not errors, errors
        finally:
            SlowBlobModel.slow = False
