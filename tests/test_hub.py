"""Checkpoint manager: the table of official files, downloads (resume, restart, verification,
clear offline errors) and resolving a model name to a verified file. No internet: every download
comes from a local HTTP server on 127.0.0.1 that can honour or ignore ``Range``, drop the
connection half-way, stall, or leave out ``Content-Length``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
import torch

import repvit_sam
import repvit_sam.download
from repvit_sam import hub
from repvit_sam.hub import (
    CheckpointNotFoundError,
    CheckpointSpec,
    DownloadError,
    IntegrityError,
    KNOWN_CHECKPOINTS,
    cache_dir,
    download,
    file_sha256,
    load_pretrained,
    resolve_checkpoint,
)
from repvit_sam.weights import CheckpointError


# ----------------------------------------------------------------------------------------------
# A local file server


@dataclass
class Served:
    path: str
    range: Optional[str]
    status: int
    sent: int  # body bytes written


class FileServer:
    """Serves ``files`` (URL path -> bytes). ``mode``:

    * ``range``: honours ``Range: bytes=N-`` with 206 (416 past the end)
    * ``ignore``: ignores ``Range``, always 200 with the whole file
    * ``wrong_range``: answers a ranged request with a 206 that starts at byte 0
    * ``drop``: like ``range`` but closes the connection after half of the body
    * ``nolength``: 200 without ``Content-Length`` (body ends when the connection closes)
    * ``stall``: waits a second before answering
    """

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.mode = "range"
        self.requests: List[Served] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # clients that hang up are expected
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        rng = h.headers.get("Range")
        if self.mode == "stall":
            time.sleep(1.0)
        data = self.files.get(h.path)
        if data is None:
            self.requests.append(Served(h.path, rng, 404, 0))
            h.send_error(404)
            return
        start, status = 0, 200
        if rng and self.mode in ("range", "drop"):
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start, status = int(m.group(1)), 206
            if start >= len(data):
                self.requests.append(Served(h.path, rng, 416, 0))
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        elif rng and self.mode == "wrong_range":
            status = 206
        body = data[start:]
        sent = len(body) // 2 if self.mode == "drop" else len(body)
        self.requests.append(Served(h.path, rng, status, sent))  # before the body: the client may finish first
        h.send_response(status)
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if self.mode != "nolength":
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[:sent])


@pytest.fixture
def server() -> Iterator[FileServer]:
    s = FileServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def payload() -> bytes:
    """3.5 MB of random bytes: several 1 MiB read chunks."""
    return os.urandom(3_500_000)


@pytest.fixture
def served(server: FileServer, payload: bytes) -> str:
    server.files["/blob.bin"] = payload
    return server.url("/blob.bin")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def closed_port_url(path: str = "/mobile_sam.pt") -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}{path}"


# ----------------------------------------------------------------------------------------------
# The table and the cache directory


def test_known_checkpoints_cover_every_model_with_sourced_numbers():
    assert sorted(KNOWN_CHECKPOINTS) == sorted(repvit_sam.list_models())
    for name, spec in KNOWN_CHECKPOINTS.items():
        assert spec.model == name
        assert spec.url.startswith("https://") and spec.url.endswith("/" + spec.filename)
        assert spec.license == "Apache-2.0"
        if spec.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
            assert isinstance(spec.size_bytes, int) and spec.size_bytes > 1_000_000
    assert KNOWN_CHECKPOINTS["repvit"].url == "https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_sam.pt"
    assert KNOWN_CHECKPOINTS["vit_t"].url == "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
    # No public source states the RepViT-SAM file's size or hash: nothing is made up.
    repvit = KNOWN_CHECKPOINTS["repvit"]
    assert (repvit.size_bytes, repvit.sha256, repvit.sha256_prefix) == (None, None, None)
    assert KNOWN_CHECKPOINTS["vit_t"].size_bytes == 40_728_226
    sam = {n: KNOWN_CHECKPOINTS[n] for n in ("vit_b", "vit_l", "vit_h")}
    assert [s.filename for s in sam.values()] == ["sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth"]
    assert [s.size_bytes for s in sam.values()] == [375_042_383, 1_249_524_607, 2_564_550_879]
    for s in sam.values():
        assert s.url == "https://dl.fbaipublicfiles.com/segment_anything/" + s.filename
        # The hex in SAM's names is an MD5 prefix, not a SHA-256 one: it must not be used as one.
        name_hex = s.filename.rsplit("_", 1)[1].split(".")[0]
        assert not s.sha256.startswith(name_hex)
        assert s.sha256_prefix is None


def test_specs_are_frozen():
    with pytest.raises(Exception):
        KNOWN_CHECKPOINTS["vit_b"].url = "http://example.invalid/x"  # type: ignore[misc]


def test_cache_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("REPVIT_SAM_HOME", raising=False)
    assert cache_dir() == tmp_path / "user" / ".cache" / "repvit_sam"
    monkeypatch.setenv("REPVIT_SAM_HOME", "")
    assert cache_dir() == tmp_path / "user" / ".cache" / "repvit_sam"
    monkeypatch.setenv("REPVIT_SAM_HOME", str(tmp_path / "weights"))
    assert cache_dir() == tmp_path / "weights"
    monkeypatch.setenv("REPVIT_SAM_HOME", "~/models")
    assert cache_dir() == tmp_path / "user" / "models"
    assert hub.cached_path("sam_vit_h") == tmp_path / "user" / "models" / "sam_vit_h_4b8939.pth"


# ----------------------------------------------------------------------------------------------
# download()


def test_download_verifies_and_records_hash(tmp_path, server, served, payload):
    dest = tmp_path / "sub" / "blob.bin"
    out = download(served, dest, sha256=sha(payload), size=len(payload), progress=False)
    assert out == dest
    assert dest.read_bytes() == payload
    assert not dest.with_name("blob.bin.part").exists()
    assert [(r.range, r.status, r.sent) for r in server.requests] == [(None, 200, len(payload))]
    record = json.loads(dest.with_name("blob.bin.sha256").read_text())
    assert record == {"sha256": sha(payload), "size": len(payload), "mtime_ns": dest.stat().st_mtime_ns}
    assert file_sha256(dest) == sha(payload)
    # no stray temporary files next to it
    assert sorted(p.name for p in dest.parent.iterdir() if not p.name.endswith(".lock")) == ["blob.bin", "blob.bin.sha256"]


def test_resume_requests_only_the_remaining_bytes(tmp_path, server, served, payload):
    dest = tmp_path / "blob.bin"
    k = 1_234_567
    dest.with_name("blob.bin.part").write_bytes(payload[:k])
    download(served, dest, sha256=sha(payload), size=len(payload), progress=False)
    assert dest.read_bytes() == payload
    assert [(r.range, r.status, r.sent) for r in server.requests] == [(f"bytes={k}-", 206, len(payload) - k)]
    assert not dest.with_name("blob.bin.part").exists()


def test_server_ignoring_range_restarts_from_zero(tmp_path, server, served, payload):
    server.mode = "ignore"
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"\0" * 500_000)  # wrong bytes: must be overwritten, not kept
    download(served, dest, sha256=sha(payload), size=len(payload), progress=False)
    assert dest.read_bytes() == payload
    assert [(r.range, r.status, r.sent) for r in server.requests] == [("bytes=500000-", 200, len(payload))]


def test_mismatched_content_range_restarts_from_zero(tmp_path, server, served, payload):
    server.mode = "wrong_range"
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(payload[:1000])
    download(served, dest, sha256=sha(payload), progress=False)
    assert dest.read_bytes() == payload
    assert [(r.range, r.status) for r in server.requests] == [("bytes=1000-", 206), (None, 200)]


def test_part_longer_than_remote_file_is_discarded_after_416(tmp_path, server, served, payload):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(payload + b"extra")
    download(served, dest, sha256=sha(payload), progress=False)  # size unknown: the server says 416
    assert dest.read_bytes() == payload
    assert [(r.range, r.status) for r in server.requests] == [(f"bytes={len(payload) + 5}-", 416), (None, 200)]


def test_part_longer_than_known_size_is_discarded_without_asking(tmp_path, server, served, payload):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(payload + b"extra")
    download(served, dest, size=len(payload), progress=False)
    assert dest.read_bytes() == payload
    assert [(r.range, r.status) for r in server.requests] == [(None, 200)]


def test_complete_part_is_verified_without_network(tmp_path, payload):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(payload)
    out = download(closed_port_url(), dest, sha256=sha(payload), size=len(payload), progress=False)
    assert out.read_bytes() == payload


def test_dropped_connection_keeps_part_and_next_call_resumes(tmp_path, server, served, payload):
    server.mode = "drop"
    dest = tmp_path / "blob.bin"
    part = dest.with_name("blob.bin.part")
    with pytest.raises(DownloadError) as e:
        download(served, dest, sha256=sha(payload), size=len(payload), progress=False)
    half = len(payload) // 2
    msg = str(e.value)
    assert "\n" not in msg
    assert f"could not download {served} (connection closed after {half} of {len(payload)} bytes)" in msg
    assert f"{half} bytes kept in {part}, run again to resume" in msg
    assert msg.endswith(f"put the file at {dest} or pass --checkpoint PATH")
    assert part.read_bytes() == payload[:half] and not dest.exists()

    server.mode = "range"
    download(served, dest, sha256=sha(payload), size=len(payload), progress=False)
    assert dest.read_bytes() == payload
    assert (server.requests[-1].range, server.requests[-1].sent) == (f"bytes={half}-", len(payload) - half)


def test_sha256_mismatch_leaves_nothing_behind(tmp_path, served, payload):
    dest = tmp_path / "blob.bin"
    wrong = "0" * 64
    with pytest.raises(IntegrityError) as e:
        download(served, dest, sha256=wrong, progress=False)
    assert isinstance(e.value, CheckpointError)
    assert f"has sha256 {sha(payload)}, expected {wrong}" in str(e.value)
    assert "\n" not in str(e.value)
    assert not dest.exists()
    assert not dest.with_name("blob.bin.part").exists()
    assert not dest.with_name("blob.bin.sha256").exists()


def test_sha256_prefix_is_checked_case_insensitively(tmp_path, served, payload):
    ok = download(served, tmp_path / "a.bin", sha256_prefix=sha(payload)[:8].upper(), progress=False)
    assert ok.read_bytes() == payload
    bad_prefix = "ffffff" if not sha(payload).startswith("ffffff") else "000000"
    with pytest.raises(IntegrityError, match=f"expected one starting with {bad_prefix}"):
        download(served, tmp_path / "b.bin", sha256_prefix=bad_prefix, progress=False)
    assert not (tmp_path / "b.bin").exists() and not (tmp_path / "b.bin.part").exists()


def test_size_mismatch_from_headers_is_refused_before_downloading(tmp_path, server, served, payload):
    dest = tmp_path / "blob.bin"
    with pytest.raises(IntegrityError, match=f"the server reports {len(payload)} bytes, expected {len(payload) + 1}"):
        download(served, dest, size=len(payload) + 1, progress=False)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_size_mismatch_without_content_length(tmp_path, server, served, payload):
    server.mode = "nolength"
    dest = tmp_path / "blob.bin"
    with pytest.raises(IntegrityError, match=f"the file has {len(payload)} bytes, expected {len(payload) - 1}"):
        download(served, dest, size=len(payload) - 1, progress=False)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()
    # without an expected size the same answer is accepted
    assert download(served, dest, sha256=sha(payload), progress=False).read_bytes() == payload


def test_offline_error_is_one_line_with_url_and_destination(tmp_path):
    url = closed_port_url()
    dest = tmp_path / "cache" / "mobile_sam.pt"
    with pytest.raises(DownloadError) as e:
        download(url, dest, progress=False, timeout=5)
    msg = str(e.value)
    assert isinstance(e.value, RuntimeError)
    assert "\n" not in msg
    assert re.fullmatch(
        re.escape(f"could not download {url} (") + r"[^()]*[Cc]onnection refused[^()]*" + re.escape(f"); put the file at {dest} or pass --checkpoint PATH"),
        msg,
    ), msg
    assert not dest.exists() and not dest.with_name("mobile_sam.pt.part").exists()


def test_http_error_is_a_download_error(tmp_path, server):
    url = server.url("/missing.pt")
    with pytest.raises(DownloadError, match=re.escape(f"could not download {url} (HTTP 404 Not Found); put the file at")):
        download(url, tmp_path / "missing.pt", progress=False)


def test_timeout_is_settable(tmp_path, server, served):
    server.mode = "stall"
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match=re.escape(f"could not download {served} (timed out)")):
        download(served, tmp_path / "blob.bin", progress=False, timeout=0.2)
    assert time.perf_counter() - t0 < 0.9


def test_progress_bar_goes_to_stderr(tmp_path, served, payload, capsys):
    download(served, tmp_path / "blob.bin", size=len(payload), progress=True)
    err = capsys.readouterr().err
    assert "blob.bin" in err and "100%" in err
    download(served, tmp_path / "quiet.bin", size=len(payload), progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------------
# Hash sidecar


def test_sidecar_is_used_while_size_and_mtime_match(tmp_path, monkeypatch):
    f = tmp_path / "w.pt"
    f.write_bytes(b"abc" * 1000)
    digest = file_sha256(f)
    assert digest == sha(b"abc" * 1000)
    calls = []
    import repvit_sam.download as dl

    monkeypatch.setattr(dl, "file_sha256_uncached", lambda p: calls.append(p) or "f" * 64)
    assert file_sha256(f) == digest and calls == []  # from the sidecar
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert file_sha256(f) == "f" * 64 and calls == [f]  # mtime changed: hashed again
    assert json.loads((tmp_path / "w.pt.sha256").read_text())["sha256"] == "f" * 64
    assert file_sha256(tmp_path / "w.pt", use_cache=False) == "f" * 64 and len(calls) == 2


def test_corrupt_sidecar_is_ignored(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"xyz")
    (tmp_path / "w.pt.sha256").write_text("not json")
    assert file_sha256(f) == sha(b"xyz")
    assert json.loads((tmp_path / "w.pt.sha256").read_text())["sha256"] == sha(b"xyz")


# ----------------------------------------------------------------------------------------------
# resolve_checkpoint() / load_pretrained()


@pytest.fixture(scope="module")
def vit_t_state() -> Dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return repvit_sam.build_sam("vit_t").state_dict()


@pytest.fixture(scope="module")
def vit_t_bytes(vit_t_state) -> bytes:
    buf = io.BytesIO()
    torch.save(vit_t_state, buf)
    return buf.getvalue()


@pytest.fixture
def home(monkeypatch, tmp_path) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("REPVIT_SAM_HOME", str(h))
    return h


@pytest.fixture
def official(monkeypatch, server, vit_t_bytes, home) -> CheckpointSpec:
    """The "official" MobileSAM file, served locally, with its real size and hash in the table."""
    server.files["/weights/mobile_sam.pt"] = vit_t_bytes
    spec = replace(
        KNOWN_CHECKPOINTS["vit_t"],
        url=server.url("/weights/mobile_sam.pt"),
        size_bytes=len(vit_t_bytes),
        sha256=sha(vit_t_bytes),
    )
    monkeypatch.setitem(KNOWN_CHECKPOINTS, "vit_t", spec)
    return spec


def test_resolve_downloads_into_home_and_verifies(server, official, home, vit_t_bytes):
    path = resolve_checkpoint("mobile_sam", progress=False)  # an alias
    assert path == home / "mobile_sam.pt"
    assert path.read_bytes() == vit_t_bytes
    assert json.loads((home / "mobile_sam.pt.sha256").read_text())["sha256"] == official.sha256
    assert [(r.path, r.status) for r in server.requests] == [("/weights/mobile_sam.pt", 200)]


def test_resolve_again_uses_cache_without_network_or_rehash(server, official, home, monkeypatch):
    first = resolve_checkpoint("vit_t", progress=False)
    monkeypatch.setattr(repvit_sam.download, "file_sha256_uncached", lambda p: pytest.fail("hashed again"))
    server.files.clear()  # any request would now be a 404
    assert resolve_checkpoint("vit_t", progress=False) == first
    assert len(server.requests) == 1


def test_resolve_respects_home_change(server, official, monkeypatch, tmp_path):
    monkeypatch.setenv("REPVIT_SAM_HOME", str(tmp_path / "elsewhere"))
    assert resolve_checkpoint("vit_t", progress=False) == tmp_path / "elsewhere" / "mobile_sam.pt"
    assert not (tmp_path / "home").exists()


def test_explicit_checkpoint_wins_and_never_touches_network(server, official, home, tmp_path, monkeypatch):
    home.mkdir()
    (home / "mobile_sam.pt").write_bytes(b"cached, but not asked for")
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"anything: checked when the model loads it")
    monkeypatch.setattr(repvit_sam.download, "file_sha256_uncached", lambda p: pytest.fail("explicit files are not hashed"))
    assert resolve_checkpoint("vit_t", explicit) == explicit
    assert resolve_checkpoint("vit_t", str(explicit), download=False) == explicit
    assert server.requests == []
    assert (home / "mobile_sam.pt").read_bytes() == b"cached, but not asked for"
    assert not (tmp_path / "mine.pt.sha256").exists()


def test_missing_explicit_checkpoint_is_a_clear_error(official, tmp_path, server):
    missing = tmp_path / "nope" / "repvit_sam.pt"
    with pytest.raises(CheckpointNotFoundError) as e:
        resolve_checkpoint("repvit", missing)
    assert str(e.value) == f"checkpoint not found: {missing}"
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, CheckpointError)
    with pytest.raises(CheckpointNotFoundError, match="is not a file"):
        resolve_checkpoint("repvit", tmp_path)
    assert server.requests == []


def test_unknown_model_name(tmp_path):
    with pytest.raises(KeyError, match="unknown model 'vit_z'"):
        resolve_checkpoint("vit_z", download=False)


def test_download_disabled_and_missing(official, home, server):
    with pytest.raises(CheckpointNotFoundError) as e:
        resolve_checkpoint("vit_t", download=False)
    msg = str(e.value)
    assert msg == (
        f"no checkpoint for 'vit_t' at {home / 'mobile_sam.pt'} and downloading is off; "
        f"download {official.url} to that path or pass --checkpoint PATH"
    )
    assert server.requests == []


def test_resolve_offline_names_url_and_cache_path(monkeypatch, home):
    url = closed_port_url("/weights/mobile_sam.pt")
    monkeypatch.setitem(KNOWN_CHECKPOINTS, "vit_t", replace(KNOWN_CHECKPOINTS["vit_t"], url=url))
    with pytest.raises(DownloadError) as e:
        resolve_checkpoint("vit_t", progress=False, timeout=5)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"could not download {url} (")
    assert msg.endswith(f"put the file at {home / 'mobile_sam.pt'} or pass --checkpoint PATH")


def test_cached_file_with_wrong_hash_is_refused_not_deleted(official, home, server, vit_t_bytes):
    home.mkdir()
    tampered = bytearray(vit_t_bytes)
    tampered[-100] ^= 0xFF
    (home / "mobile_sam.pt").write_bytes(bytes(tampered))
    with pytest.raises(IntegrityError) as e:
        resolve_checkpoint("vit_t", progress=False)
    msg = str(e.value)
    assert f"has sha256 {sha(bytes(tampered))}, expected {official.sha256}" in msg
    assert "not the official 'vit_t' checkpoint" in msg and "delete it to download it again" in msg
    assert (home / "mobile_sam.pt").read_bytes() == bytes(tampered)
    assert server.requests == []


def test_cached_file_with_wrong_size_is_refused(official, home):
    home.mkdir()
    (home / "mobile_sam.pt").write_bytes(b"short")
    with pytest.raises(IntegrityError, match=f"has 5 bytes, expected {official.size_bytes}"):
        resolve_checkpoint("vit_t", progress=False)


def test_cached_file_with_wrong_keys_is_a_checkpoint_error(monkeypatch, home, vit_t_state):
    # No size or hash known (as for repvit): the key/shape table is what catches the bad file.
    monkeypatch.setitem(
        KNOWN_CHECKPOINTS, "vit_t", replace(KNOWN_CHECKPOINTS["vit_t"], url=closed_port_url(), size_bytes=None, sha256=None)
    )
    sd = dict(vit_t_state)
    dropped = "mask_decoder.iou_token.weight"
    del sd[dropped]
    sd["extra.weight"] = torch.zeros(3)
    sd["image_encoder.neck.0.weight"] = torch.zeros(1, 1, 1, 1)
    home.mkdir()
    torch.save(sd, home / "mobile_sam.pt")
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint("vit_t", progress=False)
    assert not isinstance(e.value, IntegrityError)
    msg = str(e.value)
    assert msg.startswith(f"{home / 'mobile_sam.pt'} does not fit model 'vit_t': ")
    assert f"1 missing ({dropped})" in msg
    assert "1 unexpected (extra.weight)" in msg
    assert "image_encoder.neck.0.weight: file [1, 1, 1, 1] vs model [256, 320, 1, 1]" in msg


def test_cached_file_that_is_not_a_checkpoint(monkeypatch, home):
    monkeypatch.setitem(KNOWN_CHECKPOINTS, "vit_t", replace(KNOWN_CHECKPOINTS["vit_t"], size_bytes=None, sha256=None))
    home.mkdir()
    (home / "mobile_sam.pt").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        resolve_checkpoint("vit_t", download=False)


def test_load_pretrained_downloads_and_loads_exact_weights(server, official, vit_t_state, home):
    model = load_pretrained("mobile_sam", progress=False)
    assert not model.training
    got = model.state_dict()
    for k in ("mask_decoder.iou_token.weight", "image_encoder.neck.0.weight", "image_encoder.patch_embed.seq.0.c.weight"):
        assert torch.equal(got[k], vit_t_state[k]), k
    assert (home / "mobile_sam.pt").exists()
    assert len(server.requests) == 1
