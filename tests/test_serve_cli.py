"""``repvit-sam serve``: arguments, errors, wiring into uvicorn; and the load-test tool."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch

from conftest import TINY, randomize_
from repvit_sam import build_from_config, cli
from repvit_sam.serve import cli as serve_cli

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'repvit-sam[serve]'")


def parse(*argv):
    return cli.build_parser().parse_args(["serve", *argv])


def test_defaults_are_local_and_bounded():
    a = parse()
    assert (a.host, a.port) == ("127.0.0.1", 7860)
    assert (a.max_upload_mb, a.max_pixels, a.cache_size, a.backend, a.random_weights) == (20.0, 40_000_000, 16, None, False)
    a = parse("--port", "8000", "--max-pixels", "1e6", "--backend", "fused-cl", "--model", "vit_t")
    assert (a.port, a.max_pixels, a.backend, a.model) == (8000, 1_000_000, "fused-cl", "vit_t")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--port", "70000"], "port must be 1..65535"),
        (["--max-upload-mb", "0"], "must be > 0"),
        (["--cache-size", "x"], "expected an integer"),
        (["--backend", "onnx"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(argv, words, capsys):
    assert cli.main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") <= 3


def test_help_lists_serve_and_stays_light():
    assert "serve" in cli.build_parser().format_help()
    code = "import sys, repvit_sam.cli as c; c.build_parser(); print('fastapi' in sys.modules, 'uvicorn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_missing_web_stack_names_the_extra(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert cli.main(["serve", "--random-weights"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: repvit-sam serve needs uvicorn: pip install 'repvit-sam[serve]'"


def test_port_in_use_is_a_usage_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_random_weights_and_checkpoint_exclude_each_other(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(serve_cli, "check_port_free", lambda host, port: None)
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"x")
    assert cli.main(["serve", "--random-weights", "--checkpoint", str(ckpt)]) == 2
    assert "--random-weights and --checkpoint exclude each other" in capsys.readouterr().err


@pytest.fixture
def captured_run(monkeypatch):
    """Replaces the model loading (a tiny random model) and uvicorn.run (records its arguments)."""
    import uvicorn

    torch.manual_seed(0)
    tiny = randomize_(build_from_config(TINY["repvit"]))
    calls = {}
    monkeypatch.setattr(serve_cli, "build_model", lambda args: (tiny, "tiny"))
    monkeypatch.setattr(serve_cli, "check_port_free", lambda host, port: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    return calls


def test_serve_builds_the_app_from_the_arguments(captured_run, capsys):
    from fastapi.testclient import TestClient

    assert cli.main(["serve", "--port", "9123", "--max-upload-mb", "5", "--max-pixels", "1000000", "--cache-size", "3",
                     "--backend", "fused"]) == 0
    assert (captured_run["host"], captured_run["port"]) == ("127.0.0.1", 9123)
    info = TestClient(captured_run["app"]).get("/api/info").json()
    assert (info["max_upload_bytes"], info["max_pixels"], info["cache_size"], info["backend"], info["model"]) == (
        5 * 1024 * 1024, 1_000_000, 3, "fused", "tiny")
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9123/" in err and "warning" not in err


def test_serve_warns_when_not_local(captured_run, capsys):
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 0
    assert captured_run["host"] == "0.0.0.0"
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err


# --------------------------------------------------------------------------- load test
def test_loadtest_prompts_stay_inside_each_image():
    from repvit_sam.serve.loadtest import _image_size, _prompts

    sizes = {_image_size(i, 320) for i in range(20)}
    assert len(sizes) == 20  # every client's picture has its own size
    w, h = _image_size(3, 320)
    prompts = _prompts(3, 50, (w, h))
    assert prompts == _prompts(3, 50, (w, h)) and len(prompts) == 50
    for p in prompts:
        assert p["points"] or p["box"]
        for x, y, label in p["points"]:
            assert 0 <= x <= w and 0 <= y <= h and label in (0, 1)
        if p["box"]:
            x0, y0, x1, y1 = p["box"]
            assert x0 <= x1 and y0 <= y1 and x1 <= w and y1 <= h


def test_loadtest_runs_and_finds_no_mixups(tmp_path):
    """Two clients x four clicks against a real server process (tiny model): ~10 s."""
    import json

    from repvit_sam.serve.loadtest import main

    out = tmp_path / "lt.json"
    assert main(["--clients", "2", "--clicks", "4", "--image-size", "96", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert (res["requests"], res["errors"], res["mixed_up"], res["replayed"], res["images_embedded"]) == (8, 0, 0, 8, 2)
    assert 0 < res["click_ms_p50"] <= res["click_ms_p95"] <= res["click_ms_max"]
