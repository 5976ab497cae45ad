"""The web demo's JSON API (``repvit_sam.serve.app``) with a tiny random-weight model:
every endpoint, every kind of bad request, the embedding cache and concurrent clients."""

from __future__ import annotations

import io
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, randomize_

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'repvit-sam[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from repvit_sam import SamAutomaticMaskGenerator, SamPredictor, build_from_config  # noqa: E402
from repvit_sam.inference.masks import rle_to_mask  # noqa: E402
from repvit_sam.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request):
    """A random-weight model of each tiny variant."""
    torch.manual_seed(0)
    return randomize_(build_from_config(TINY[request.param]), seed=2)


class EncoderCounter:
    """Counts forward passes of the image encoder (a hook on the module itself)."""

    def __init__(self, model) -> None:
        self.calls = 0
        self.handle = model.image_encoder.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.calls += 1


@pytest.fixture
def encoder_calls(model):
    counter = EncoderCounter(model)
    yield counter
    counter.handle.remove()


def make_client(model, **kwargs) -> TestClient:
    return TestClient(create_app(model, model_name="tiny", **kwargs))


@pytest.fixture
def client(model):
    with make_client(model) as c:
        yield c


def picture(w: int = 96, h: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    img[h // 4 : 3 * h // 4, w // 4 : w // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
    return img


def encode(img: np.ndarray, fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **save)
    return buf.getvalue()


def upload(client, data: bytes, name: str = "x.png"):
    return client.post("/api/images", files={"file": (name, data, "application/octet-stream")})


def uploaded(client, img: np.ndarray) -> str:
    r = upload(client, encode(img))
    assert r.status_code == 200, r.text
    return r.json()["image_id"]


def error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 400
    return detail


# --------------------------------------------------------------------------- upload
def test_upload_returns_id_and_size(client):
    r = upload(client, encode(picture(96, 64)))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"image_id", "width", "height"}
    assert (body["width"], body["height"]) == (96, 64)
    assert len(body["image_id"]) == 32 and int(body["image_id"], 16) >= 0


def test_same_picture_is_embedded_once(client, encoder_calls):
    img = picture(80, 60)
    ids = {upload(client, encode(img, fmt)).json()["image_id"] for fmt in ("PNG", "BMP", "TIFF")}
    assert len(ids) == 1  # keyed by the decoded pixels, not the file's bytes
    assert encoder_calls.calls == 1
    other = upload(client, encode(picture(80, 60, seed=1))).json()["image_id"]
    assert other not in ids and encoder_calls.calls == 2


def test_exif_orientation_is_applied(client):
    img = picture(96, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    r = upload(client, encode(img, "JPEG", exif=exif.tobytes()), "photo.jpg")
    assert (r.json()["width"], r.json()["height"]) == (64, 96)


def test_upload_not_an_image_is_415(client):
    detail = error(upload(client, b"GIF89a not really" * 10, "cat.png"), 415)
    assert "not an image" in detail and "cat.png" in detail
    assert "empty" in error(upload(client, b""), 415)


def test_upload_unsupported_format_is_415(client):
    buf = io.BytesIO()
    Image.fromarray(picture()).save(buf, format="GIF")
    assert "supported format" in error(upload(client, buf.getvalue(), "a.gif"), 415)


def test_upload_truncated_image_is_415_without_server_paths(client):
    data = encode(picture(200, 150), "JPEG")
    detail = error(upload(client, data[: len(data) // 2], "half.jpg"), 415)
    assert "truncated" in detail and "half.jpg" in detail
    assert "/tmp" not in detail and "repvit-sam-upload" not in detail


def test_upload_too_many_pixels_is_413(model):
    with make_client(model, max_pixels=100 * 100) as c:
        detail = error(upload(c, encode(picture(120, 100))), 413)
        assert "12,000 pixels" in detail and "10,000" in detail
        assert upload(c, encode(picture(100, 100))).status_code == 200


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds almost no data (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(client, encoder_calls):
    detail = error(upload(client, _png_header_only(60_000, 60_000), "bomb.png"), 413)
    assert "pixels" in detail
    assert encoder_calls.calls == 0


def test_upload_too_large_is_413(model):
    with make_client(model, max_upload_bytes=50_000) as c:
        big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)  # ~120 kB as PNG
        assert "too large" in error(upload(c, encode(big)), 413)
        assert upload(c, encode(picture())).status_code == 200


def test_streamed_upload_without_length_is_cut_at_the_limit(model):
    with make_client(model, max_upload_bytes=10_000) as c:
        boundary = "XyZ"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()
        sent = []

        def body():
            yield head
            for _ in range(200):  # 200 x 4 kB, far beyond the limit; the server stops reading early
                sent.append(1)
                yield b"\0" * 4096
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post("/api/images", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert "too large" in error(r, 413)


def test_upload_without_file_field_is_422(client):
    r = client.post("/api/images", files={"image": ("a.png", encode(picture()), "image/png")})
    assert "file" in error(r, 422)


# --------------------------------------------------------------------------- predict
def reference(model, img, points=None, box=None, multimask=True):
    p = SamPredictor(model)
    p.set_image(img)
    coords = labels = None
    if points:
        arr = np.asarray(points, dtype=np.float64)
        coords, labels = arr[:, :2], arr[:, 2].astype(int)
    return p.predict(coords, labels, None if box is None else np.asarray(box, float), multimask_output=multimask)[:2]


@pytest.mark.parametrize(
    "prompt",
    [
        {"points": [[30, 20, 1]], "box": None, "multimask": True},
        {"points": [[30, 20, 1], [70, 50, 0]], "box": None, "multimask": False},
        {"box": [10, 8, 60, 50], "multimask": False},
        {"points": [[40.5, 30.25, 1]], "box": [10, 8, 60, 50], "multimask": True},
    ],
)
def test_predict_matches_the_predictor_in_image_pixels(client, model, encoder_calls, prompt):
    img = picture(96, 64)
    image_id = uploaded(client, img)
    before = encoder_calls.calls
    r = client.post(f"/api/images/{image_id}/predict", json=prompt)
    assert r.status_code == 200, r.text
    assert encoder_calls.calls == before  # a prompt is a decoder pass only
    body = r.json()
    masks, scores = reference(model, img, prompt.get("points"), prompt.get("box"), prompt["multimask"])
    assert len(body["masks"]) == len(body["scores"]) == (3 if prompt["multimask"] else 1)
    for rle, ref in zip(body["masks"], masks):
        assert rle["size"] == [64, 96] and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(rle_to_mask(rle), ref)
    np.testing.assert_allclose(body["scores"], scores, rtol=1e-5, atol=1e-6)


def test_many_clicks_cost_no_encoder_pass(client, encoder_calls):
    image_id = uploaded(client, picture())
    for x in range(5, 90, 10):
        assert client.post(f"/api/images/{image_id}/predict", json={"points": [[x, 30, 1]]}).status_code == 200
    assert encoder_calls.calls == 1


@pytest.mark.parametrize(
    "body, words",
    [
        ({"points": [], "box": None}, "at least one point"),
        ({}, "at least one point"),
        ({"points": [[10, 10, 2]]}, "points[0][2]: point label must be 1 (foreground) or 0 (background), got 2"),
        ({"points": [[10, 10, True]]}, "points[0][2]"),
        ({"points": [[10, "10", 1]]}, "points[0][1]"),
        ({"points": [[10, 10]]}, "points[0]"),
        ({"points": [[10, "a", 1]]}, "points[0][1]"),
        ({"points": [[1000, 10, 1]]}, "outside the 96x64 image"),
        ({"points": [[-1, 10, 1]]}, "outside"),
        ({"box": [50, 10, 20, 40]}, "x0 <= x1"),
        ({"box": [0, 0, 10]}, "box"),
        ({"box": [0, 0, 200, 10]}, "outside"),
        ({"points": [[1, 1, 1]] * 65}, "at most 64"),
        ({"points": [[1, 1, 1]], "multimask": "maybe"}, "multimask"),
        ({"points": [[1, 1, 1]], "mask": 1}, "mask"),
    ],
)
def test_bad_prompts_are_422_with_a_message(client, body, words):
    image_id = uploaded(client, picture(96, 64))
    assert words in error(client.post(f"/api/images/{image_id}/predict", json=body), 422)


def test_non_finite_and_malformed_json_are_422(client):
    image_id = uploaded(client, picture())
    url = f"/api/images/{image_id}/predict"
    headers = {"Content-Type": "application/json"}
    assert "points[0][0]" in error(client.post(url, content=b'{"points": [[NaN, 1, 1]]}', headers=headers), 422)
    assert "points[0][1]" in error(client.post(url, content=b'{"points": [[1, Infinity, 1]]}', headers=headers), 422)
    assert "JSON" in error(client.post(url, content=b'{"points": [[1, 1, 1]', headers=headers), 422)


def test_predict_unknown_image_is_404(client):
    detail = error(client.post("/api/images/0123456789abcdef0123456789abcdef/predict", json={"points": [[1, 1, 1]]}), 404)
    assert "unknown image id" in detail and "POST /api/images" in detail


def test_json_body_too_large_is_413(client):
    image_id = uploaded(client, picture())
    r = client.post(f"/api/images/{image_id}/predict", content=b'{"points": [' + b" " * 400_000 + b"]}",
                    headers={"Content-Type": "application/json"})
    assert "too large" in error(r, 413)


# --------------------------------------------------------------------------- everything
# A small grid with every filter off, so that the served records can be compared with the
# generator's on random weights.
EVERYTHING_PARAMS = {"points_per_side": 6, "points_per_batch": 16, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
                     "box_nms_thresh": 0.9}


def test_everything_matches_the_mask_generator_and_reports_progress(client, model, encoder_calls):
    img = picture(96, 64)
    image_id = uploaded(client, img)
    assert client.get(f"/api/images/{image_id}/everything/progress").json() == {"state": "idle", "done": 0, "total": 0}
    params = EVERYTHING_PARAMS
    r = client.post(f"/api/images/{image_id}/everything", json=params)
    assert r.status_code == 200, r.text
    assert encoder_calls.calls == 1  # the cached embedding is reused
    body = r.json()
    ref = SamAutomaticMaskGenerator(model, output_mode="coco_rle", **params).generate(img)
    assert len(body["masks"]) == len(ref) > 0
    assert sorted(m["counts"] for m in body["masks"]) == sorted(rec["segmentation"]["counts"] for rec in ref)
    areas = [int(rle_to_mask(m).sum()) for m in body["masks"]]
    assert areas == sorted(areas, reverse=True)
    assert len(body["scores"]) == len(body["stability_scores"]) == len(body["point_coords"]) == len(ref)
    assert client.get(f"/api/images/{image_id}/everything/progress").json() == {"state": "done", "done": 3, "total": 3}


def test_everything_with_m2m_matches_the_mask_generator(client, model):
    """`use_m2m` (SAM 2's mask-to-mask refinement) is served: the masks and scores are the
    generator's with the same option, and the scores are not the unrefined ones (the refined
    predicted IoU replaces the first)."""
    img = picture(96, 64)
    image_id = uploaded(client, img)
    params = EVERYTHING_PARAMS
    got = {}
    for m2m in (False, True):
        r = client.post(f"/api/images/{image_id}/everything", json={**params, "use_m2m": m2m})
        assert r.status_code == 200, r.text
        body = r.json()
        got[m2m] = sorted((m["counts"], round(sc, 5)) for m, sc in zip(body["masks"], body["scores"]))
    ref = SamAutomaticMaskGenerator(model, output_mode="coco_rle", use_m2m=True, **params).generate(img)
    assert got[True] == sorted((rec["segmentation"]["counts"], round(rec["predicted_iou"], 5)) for rec in ref) and len(ref) > 0
    assert [sc for _, sc in got[True]] != [sc for _, sc in got[False]]


def test_everything_defaults_and_bad_parameters(client):
    image_id = uploaded(client, picture())
    r = client.post(f"/api/images/{image_id}/everything")  # no body: defaults (16 x 16 points)
    assert r.status_code == 200 and isinstance(r.json()["masks"], list)
    assert client.get(f"/api/images/{image_id}/everything/progress").json()["total"] == 4
    assert "points_per_side" in error(client.post(f"/api/images/{image_id}/everything", json={"points_per_side": 0}), 422)
    assert "pred_iou_thresh" in error(client.post(f"/api/images/{image_id}/everything", json={"pred_iou_thresh": 2}), 422)
    assert "decoder batches" in error(client.post(f"/api/images/{image_id}/everything", json={"points_per_side": 64, "points_per_batch": 1}), 422)
    assert "points_per_side" in error(client.post(f"/api/images/{image_id}/everything", json={"points_per_side": "8"}), 422)
    assert "crop_n_layers" in error(client.post(f"/api/images/{image_id}/everything", json={"crop_n_layers": 1}), 422)
    assert "use_m2m" in error(client.post(f"/api/images/{image_id}/everything", json={"use_m2m": "yes"}), 422)
    assert error(client.post("/api/images/nope/everything"), 404)
    assert error(client.get("/api/images/nope/everything/progress"), 404)


# --------------------------------------------------------------------------- delete, cache
def test_delete_forgets_the_image(client, encoder_calls):
    image_id = uploaded(client, picture())
    r = client.delete(f"/api/images/{image_id}")
    assert r.status_code == 204 and r.content == b""
    assert "unknown image id" in error(client.post(f"/api/images/{image_id}/predict", json={"points": [[1, 1, 1]]}), 404)
    assert error(client.delete(f"/api/images/{image_id}"), 404)
    assert uploaded(client, picture()) == image_id and encoder_calls.calls == 2


def test_least_recently_used_image_is_evicted(model, encoder_calls):
    with make_client(model, cache_size=2) as c:
        a, b = uploaded(c, picture(seed=1)), uploaded(c, picture(seed=2))
        assert c.post(f"/api/images/{a}/predict", json={"points": [[1, 1, 1]]}).status_code == 200  # a is now recent
        uploaded(c, picture(seed=3))  # evicts b
        assert c.post(f"/api/images/{a}/predict", json={"points": [[1, 1, 1]]}).status_code == 200
        error(c.post(f"/api/images/{b}/predict", json={"points": [[1, 1, 1]]}), 404)
        assert c.get("/api/info").json()["cached_images"] == 2
        assert encoder_calls.calls == 3


@pytest.mark.parametrize("serialize_model", [True, False])
def test_concurrent_clients_never_mix_images(model, serialize_model):
    """Threads clicking on different images at once get their own image's masks, with the
    model lock and without it (requests share no mutable state)."""
    images = [picture(64 + 8 * i, 48 + 4 * i, seed=i) for i in range(4)]
    point = [[20, 20, 1]]
    expected = [reference(model, img, point)[0] for img in images]
    with make_client(model, serialize_model=serialize_model) as c:
        ids = [uploaded(c, img) for img in images]
        failures = []
        barrier = threading.Barrier(len(images))

        def worker(i):
            barrier.wait()
            for _ in range(5):
                r = c.post(f"/api/images/{ids[i]}/predict", json={"points": point})
                masks = [rle_to_mask(m) for m in r.json()["masks"]]
                if not all(np.array_equal(m, e) for m, e in zip(masks, expected[i])):
                    failures.append(i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(images))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


# --------------------------------------------------------------------------- page, info, samples
def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    for ref in ("/static/app.js", "/static/style.css"):
        assert ref in html
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 500
    for text in (html, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text  # nothing from a CDN
    assert client.get("/static/../app.py").status_code == 404


def test_info_and_samples(client):
    info = client.get("/api/info").json()
    assert info["model"] == "tiny" and info["img_size"] == 256 and "shapes" in info["samples"]
    assert client.get("/api/samples").json()["samples"] == info["samples"]
    r = client.get("/api/samples/shapes")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (640, 480)
    assert "shapes" in error(client.get("/api/samples/nope"), 404)


def test_openapi_describes_the_api(client):
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert {"/api/images", "/api/images/{image_id}/predict", "/api/images/{image_id}/everything",
            "/api/images/{image_id}"} <= set(paths)
    up = paths["/api/images"]["post"]
    schema_ref = up["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    assert "file" in doc["components"]["schemas"][schema_ref]["properties"]
    assert {"200", "413", "415", "422"} <= set(up["responses"])
    pred = paths["/api/images/{image_id}/predict"]["post"]
    assert {"200", "404", "422"} <= set(pred["responses"])
    req = doc["components"]["schemas"]["PredictRequest"]["properties"]
    assert set(req) == {"points", "box", "multimask"}
    assert set(doc["components"]["schemas"]["PredictResponse"]["properties"]) == {"masks", "scores"}
    assert "delete" in paths["/api/images/{image_id}"]


def test_create_app_rejects_bad_settings(model):
    with pytest.raises(ValueError, match="cache_size must be positive"):
        create_app(model, cache_size=0)
