"""End to end: the demo page in headless Chromium (Debian's ``chromium`` driven by Playwright).

A real uvicorn server with a tiny random-weight model runs in a thread on a free loopback port;
the browser uploads an image through the page, clicks on it, and the test checks that the mask
overlay shows exactly the mask the API returns for that click. Screenshots are saved under
pytest's tmp_path (the path is printed). Skipped, saying why, when chromium is not installed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, randomize_

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium") if p and Path(p).exists()), None)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"),
]

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install 'repvit-sam[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed: pip install 'repvit-sam[serve]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    from repvit_sam import build_from_config
    from repvit_sam.serve.app import create_app

    torch.manual_seed(0)
    # seed 2: the click below gives a small mask (2.5 % of the image), not an empty or full one
    model = randomize_(build_from_config(TINY["repvit"]), seed=2)
    app = create_app(model, model_name="tiny-repvit")
    with _serving(app) as base:
        yield base, app


@contextlib.contextmanager
def _serving(app):
    """A real uvicorn server for ``app`` in a thread on a free loopback port; yields its base URL."""
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 20 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _photo(path: Path) -> Path:
    from repvit_sam.serve.samples import shapes_image

    shapes_image(320, 240).save(path)
    return path


def _overlay_alpha(page) -> np.ndarray:
    """The overlay canvas's alpha channel, (H, W) uint8, read in the page."""
    data = page.evaluate(
        """() => { const c = document.getElementById('overlay');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   const a = new Array(c.width * c.height);
                   for (let i = 0; i < a.length; i++) a[i] = d[i * 4 + 3];
                   return {w: c.width, h: c.height, a}; }"""
    )
    return np.asarray(data["a"], dtype=np.uint8).reshape(data["h"], data["w"])


def test_page_upload_click_overlay(server, browser, tmp_path, monkeypatch):
    from repvit_sam.inference.masks import rle_to_mask

    base, app = server
    image_path = _photo(tmp_path / "scene.png")
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(base + "/")
    page.wait_for_selector("body[data-state='idle']")
    assert page.locator("#sample option").count() >= 2  # "Sample…" plus at least the synthetic one

    page.set_input_files("#file", str(image_path))
    page.wait_for_selector("body[data-state='ready']")
    assert page.locator("#status").inner_text().startswith("scene.png: 320 × 240")
    before = _overlay_alpha(page)
    assert before.shape == (240, 320) and before.max() == 0
    page.screenshot(path=str(tmp_path / "1-uploaded.png"))

    # Left click at image pixel (100, 120): the canvas is shown 1:1 (320 px fits the viewport).
    box = page.locator("#prompts").bounding_box()
    assert box is not None and round(box["width"]) == 320
    page.mouse.click(box["x"] + 100, box["y"] + 120)
    page.wait_for_selector("#overlay[data-rendered='2']")
    page.wait_for_selector("body[data-state='ready']")
    after = _overlay_alpha(page)
    page.screenshot(path=str(tmp_path / "2-clicked.png"))
    print(f"screenshots: {tmp_path}")

    # The overlay shows the best-scoring mask that the API gives for the same click.
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        image_id = client.post("/api/images", files={"file": ("s.png", image_path.read_bytes(), "image/png")}).json()["image_id"]
        res = client.post(f"/api/images/{image_id}/predict", json={"points": [[100, 120, 1]], "box": None, "multimask": True}).json()
    best = int(np.argmax(res["scores"]))
    expected = rle_to_mask(res["masks"][best])
    assert 0 < expected.sum() < expected.size, "the test needs a click whose mask is neither empty nor full"
    np.testing.assert_array_equal(after > 0, expected)
    assert not np.array_equal(before, after)
    assert page.locator("#candidates button").count() == 3
    assert page.locator("#candidates button.selected").get_attribute("data-index") == str(best)
    shot = Image.open(tmp_path / "2-clicked.png")
    assert shot.size == (1000, 800)

    # Another candidate, then undo: the overlay follows.
    other = (best + 1) % 3
    page.locator(f"#candidates button[data-index='{other}']").click()
    np.testing.assert_array_equal(_overlay_alpha(page) > 0, rle_to_mask(res["masks"][other]))
    page.keyboard.press("Control+z")
    page.wait_for_function("() => document.getElementById('candidates').children.length === 0")
    assert _overlay_alpha(page).max() == 0

    # Download the mask PNG of a right-click + box prompt: same size as the image, 0/255.
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 200, steps=5)
    page.mouse.up()
    page.wait_for_selector("#candidates button")
    page.wait_for_selector("body[data-state='ready']")
    with page.expect_download() as dl:
        page.click("#download-png")
    png = tmp_path / dl.value.suggested_filename
    dl.value.save_as(png)
    assert png.name == "scene_mask.png"
    mask_png = np.asarray(Image.open(png).convert("L"))
    np.testing.assert_array_equal(mask_png > 0, _overlay_alpha(page) > 0)
    assert set(np.unique(mask_png)) <= {0, 255}
    with page.expect_download() as dl:
        page.click("#download-json")
    doc = json.loads(Path(dl.value.path()).read_text())
    ann = doc["annotations"][0]
    assert doc["images"][0] == {"id": 1, "file_name": "scene.png", "width": 320, "height": 240}
    assert ann["area"] == int((mask_png > 0).sum())
    np.testing.assert_array_equal(rle_to_mask(ann["segmentation"]), mask_png > 0)
    assert doc["info"]["prompts"]["box"] == pytest.approx([40, 40, 200, 200], abs=1)

    # Segment everything with all thresholds off and masks refined: progress is polled while it
    # runs (each progress step, 4 points, is slowed down by 50 ms here so that the 200 ms
    # polling sees it), masks are drawn.
    from repvit_sam.serve import service as service_mod

    original = service_mod._EmbeddedGenerator._advance

    def slow_advance(self, n_points):
        time.sleep(0.05)
        return original(self, n_points)

    monkeypatch.setattr(service_mod._EmbeddedGenerator, "_advance", slow_advance)
    page.click("#everything-settings summary")
    page.fill("#pred-iou", "0")
    page.fill("#stability", "0")
    page.check("#use-m2m")  # "refine masks": SAM 2's use_m2m reaches the server
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/everything")) as sent:
        page.click("#everything")
    assert sent.value.post_data_json == {"points_per_side": 16, "pred_iou_thresh": 0, "stability_score_thresh": 0, "use_m2m": True}
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Segment everything:')", timeout=60000)
    page.wait_for_selector("body[data-state='ready']")  # the progress poller has stopped
    page.screenshot(path=str(tmp_path / "3-everything.png"))
    status = page.locator("#status").inner_text()
    n_masks = int(status.split(":")[1].split()[0])
    assert n_masks >= 1
    assert page.locator("#candidates").inner_text() == f"{n_masks} mask{'' if n_masks == 1 else 's'} found"
    seen = page.locator("#progress").get_attribute("data-seen").split()
    assert any(s.startswith("running:") and s.endswith("/4") for s in seen), seen  # 16 x 16 points, 64 per batch
    assert page.locator("#progress").is_hidden()
    assert int(page.locator("#overlay").get_attribute("data-painted")) > 0
    with page.expect_download() as dl:
        page.click("#download-json")
    doc = json.loads(Path(dl.value.path()).read_text())
    assert len(doc["annotations"]) == n_masks and doc["info"]["mode"] == "everything"

    assert errors == []
    assert all(u.startswith(base) for u in requests), "the page must not load anything from elsewhere"
    page.close()


# ---------------------------------------------------------------------------- a trained model
SCENE_SEED, OBJECT = 311, 1  # a synthetic scene (320 x 240) and the object the test clicks
MIN_IOU = 0.8


@pytest.fixture(scope="module")
def trained_server(trained_student):
    """The demo serving the trained tiny student (tests/data/trained), masks that mean something."""
    from repvit_sam.serve.app import create_app

    with _serving(create_app(trained_student, model_name="tiny-repvit-trained")) as base:
        yield base


def test_trained_model_click_shows_the_objects_mask(trained_server, browser, tmp_path):
    """Upload a synthetic scene the model never saw, click inside one object (its pixel farthest
    from the border): the overlay the page draws is that object's mask (IoU >= 0.8 against the
    scene's exact mask)."""
    from scipy import ndimage

    from repvit_sam.synthetic import make_scene

    scene = make_scene(np.random.default_rng(SCENE_SEED), 240, 320)
    gt = scene.masks[OBJECT]
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    y, x = np.unravel_index(int(ndimage.distance_transform_edt(gt).argmax()), gt.shape)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(trained_server + "/")
    page.wait_for_selector("body[data-state='idle']")
    page.set_input_files("#file", str(tmp_path / "scene.png"))
    page.wait_for_selector("body[data-state='ready']")
    box = page.locator("#prompts").bounding_box()
    assert box is not None and round(box["width"]) == 320
    page.mouse.click(box["x"] + x + 0.5, box["y"] + y + 0.5)
    page.wait_for_selector("#overlay[data-rendered='2']")
    page.wait_for_selector("body[data-state='ready']")
    shown = _overlay_alpha(page) > 0
    page.screenshot(path=str(tmp_path / "trained-click.png"))
    print(f"screenshot: {tmp_path / 'trained-click.png'}")
    iou = float((shown & gt).sum() / (shown | gt).sum())
    others = [float((shown & m).sum() / max(1, m.sum())) for i, m in enumerate(scene.masks) if i != OBJECT]
    print(f"click ({x}, {y}) on object {OBJECT} ({int(gt.sum())} px): overlay IoU {iou:.3f}")
    assert iou >= MIN_IOU, f"the overlay covers the clicked object with IoU {iou:.3f} (< {MIN_IOU})"
    assert max(others, default=0.0) < 0.5  # and not another object
    assert errors == []
    page.close()
