"""The web page in a real browser: Debian's headless Chromium driven by PyPI playwright.

The page is loaded from an in-process server (model: :class:`BlobModel`, whose answer is
known) with a start-up NIfTI whose affine flips the x axis. The test finds the two bright
boxes on the rendered axial slice like a person would (in a screenshot), clicks them, and
checks the server's voxel and intensity, the overlay colour next to the crosshair, negative
shift-clicks, a second object, undo/redo and the downloaded label map. A screenshot is kept
in ``.artefacts/`` (or ``$SAMMED3D_ARTEFACTS``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from sammed3d.inference import SamMed3DPredictor
from sammed3d.serve.app import create_app
from sammed3d.serve.config import ServeConfig
from tests.serve.helpers import ARTEFACTS, BlobModel, ExtentBlobModel, running
from tests.serve.test_web import AFFINE, web_image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)",
    ),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("browser") / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(web_image(), AFFINE), path)
    config = ServeConfig(volumes=(path,))
    with running(create_app(lambda: SamMed3DPredictor(BlobModel(32)), config)) as url:
        yield url


def canvas_rgb(page) -> tuple[np.ndarray, dict]:  # noqa: ANN001
    from PIL import Image

    canvas = page.locator("#gl")
    box = canvas.bounding_box()
    rgb = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
    return rgb, box


def bright_boxes(rgb: np.ndarray) -> list[tuple[float, float, int]]:
    """Centroids (x, y) and areas of the white boxes on the screen, largest first."""
    white = (rgb.min(axis=2) > 200) & (np.ptp(rgb, axis=2) < 30)
    white = ndimage.binary_closing(white, iterations=5)  # bridge the crosshair lines
    comps, n = ndimage.label(white)
    found = []
    for c in range(1, n + 1):
        ys, xs = np.nonzero(comps == c)
        if len(xs) > 200:
            found.append((float(xs.mean()), float(ys.mean()), len(xs)))
    return sorted(found, key=lambda f: -f[2])


def wait_idle(page, clicks: int | None = None) -> None:  # noqa: ANN001
    cond = "document.body.dataset.state === 'ready'"
    if clicks is not None:
        cond += f" && document.body.dataset.clicks === '{clicks}'"
    page.wait_for_function(cond, timeout=30_000)


@contextmanager
def web_page(sync_api, app) -> Iterator[tuple[object, list[str]]]:  # noqa: ANN001
    """The web page of ``app`` (served meanwhile) in headless Chromium, its single start-up
    volume open: ``(page, the page's uncaught errors)``."""
    with running(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            wait_idle(page)
            yield page, errors
        finally:
            browser.close()


def test_web_page_in_chromium(page_url: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="PyPI playwright not installed")
    image = web_image()
    inverse = np.linalg.inv(AFFINE)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700}, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url + "/")
            wait_idle(page)  # the single start-up volume opens by itself
            assert "flipped.nii.gz: 40 × 36 × 30" in page.inner_text("#volume-info")
            page.select_option("#view", "axial")
            page.wait_for_timeout(300)

            rgb, box = canvas_rgb(page)
            blobs = bright_boxes(rgb)
            assert len(blobs) == 2, blobs
            (ax, ay, _), (bx, by, _) = blobs  # A (larger) and B

            def click_at(x: float, y: float, n: int, shift: bool = False) -> dict:
                if shift:
                    page.keyboard.down("Shift")
                page.mouse.click(box["x"] + x, box["y"] + y)
                if shift:
                    page.keyboard.up("Shift")
                wait_idle(page, n)
                return json.loads(page.evaluate("JSON.stringify(window.sammed3d.state.lastClick)"))

            def colour_near(x: float, y: float) -> np.ndarray:
                shot, _ = canvas_rgb(page)
                return shot[int(y) + 7, int(x) + 7]  # next to the crosshair, not on it

            # 1. positive click on box A
            first = click_at(ax, ay, 1)
            assert first["positive"] is True
            ijk = inverse[:3, :3] @ np.asarray(first["mm"]) + inverse[:3, 3]
            assert first["voxel"] == [int(v) for v in np.floor(np.round(ijk, 6) + 0.5)]
            i, j, k = first["voxel"]
            assert 4 <= i < 16 and 8 <= j < 28 and 6 <= k < 24, "the click must land in box A"
            assert first["serverValue"] == float(image[i, j, k])
            assert abs(first["serverValue"] - first["viewerValue"]) <= 0.5  # same (or next) voxel
            r, g, b = colour_near(ax, ay)
            assert r > g + 60 and r > b + 40, f"label 1 (red) should tint box A, got {(r, g, b)}"

            # 2. shift-click: negative, carves a ball around it
            neg = click_at(ax, ay, 2, shift=True)
            assert neg["positive"] is False
            r, g, b = colour_near(ax, ay)
            assert min(r, g, b) > 200, (
                f"the negative click should clear the overlay, got {(r, g, b)}"
            )

            # 3. a second object on box B
            page.click("#new-object")
            wait_idle(page)
            second = click_at(bx, by, 3)
            i2, j2, k2 = second["voxel"]
            assert 26 <= i2 < 34 and 10 <= j2 < 20, "the click must land in box B"
            r, g, b = colour_near(bx, by)
            assert g > r + 40, f"label 2 (green) should tint box B, got {(r, g, b)}"
            assert page.locator("#objects li").count() == 2

            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / "serve_web_axial.png"))

            # 4. undo / redo (buttons and keyboard)
            page.click("#undo")
            wait_idle(page)
            r, g, b = colour_near(bx, by)
            assert min(r, g, b) > 200, "undo should remove object 2's mask"
            page.keyboard.press("Control+Shift+Z")
            wait_idle(page)
            r, g, b = colour_near(bx, by)
            assert g > r + 40, "redo should bring object 2's mask back"

            # 5. the downloaded label map: the input's geometry, both objects
            with page.expect_download() as info:
                page.click("#download")
            target = tmp_path / info.value.suggested_filename
            info.value.save_as(target)
            assert target.name == "flipped_labels.nii.gz"
            labels = nib.load(target)
            np.testing.assert_allclose(labels.affine, AFFINE, atol=1e-5)
            data = np.asarray(labels.dataobj)
            assert data.shape == image.shape
            assert data[tuple(second["voxel"])] == 2
            assert (data == 1).sum() > 0 and data[tuple(first["voxel"])] == 0  # carved

            page.select_option("#view", "multiplanar")
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTEFACTS / "serve_web_page.png"))
            assert not errors, errors
        finally:
            browser.close()


def test_other_extents_with_the_e_key(tmp_path: Path) -> None:
    """E / Shift+E after a first click: the overlay takes the next larger / smaller mask of
    the click, and the status line names it (numbered from 0) and the pick."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="PyPI playwright not installed")
    path = tmp_path / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(web_image(), AFFINE), path)
    app = create_app(lambda: SamMed3DPredictor(ExtentBlobModel(32)), ServeConfig(volumes=(path,)))
    with web_page(sync_api, app) as (page, errors):
        page.select_option("#view", "axial")
        page.wait_for_timeout(300)
        rgb, box = canvas_rgb(page)
        (ax, ay, _), _ = bright_boxes(rgb)
        assert page.is_disabled("#extent")
        page.mouse.click(box["x"] + ax, box["y"] + ay)
        wait_idle(page, 1)
        assert page.is_enabled("#extent")

        def tinted_area() -> int:
            shot, _ = canvas_rgb(page)
            r, g, b = (shot[..., c] for c in range(3))
            return int(((r > g + 60) & (r > b + 40)).sum())

        picked = tinted_area()  # the small ball the model picks
        page.keyboard.press("e")
        wait_idle(page)
        assert "mask 1 of 0–2" in page.inner_text("#status")
        assert "the pick is mask 0" in page.inner_text("#status")
        box_a = tinted_area()
        assert box_a > 10 * max(picked, 1)  # box A's slice, not the ball
        page.keyboard.press("Shift+E")
        wait_idle(page)
        assert "mask 0 of 0–2 (smallest first; the pick)" in page.inner_text("#status")
        assert tinted_area() == picked
        assert not errors, errors
