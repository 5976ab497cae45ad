"""A bounded load test of ``repvit-sam serve`` on loopback.

    python -m repvit_sam.serve.loadtest --model tiny_repvit --clients 20 --clicks 50
    python -m repvit_sam.serve.loadtest --model repvit            # full size, random weights

It starts the server in a child process on a free 127.0.0.1 port (random weights: no download),
gives every client its own picture (each of a different size), lets all clients click at
once (``--clicks`` prompts each, one after the other, as a person would), and reports click
latency (p50 / p95 / p99 / max), throughput and errors. Then it checks that no client got
another client's result: every mask must have its own image's size, and every click is
replayed alone afterwards and must give the same masks and scores. Exit status 0 only with
zero errors and zero mix-ups. Requests go to 127.0.0.1 only; every loop is bounded in count
and the whole run in time (``--max-seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple


def _child(args: argparse.Namespace) -> int:
    """The server side: build the model, serve on 127.0.0.1:PORT until killed."""
    import torch
    import uvicorn

    from ..modeling.fuse import fuse_model
    from ..registry import build_sam
    from .app import create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = fuse_model(build_sam(args.model), inplace=True)
    app = create_app(
        model, model_name=f"{args.model} (random weights)", backend=args.backend, cache_size=max(16, args.clients),
        serialize_model=not args.no_model_lock,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


# --------------------------------------------------------------------------- client side
@dataclass
class Click:
    client: int
    index: int
    body: Dict[str, Any]
    status: int = 0
    latency_ms: float = 0.0
    masks: List[Dict[str, Any]] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    error: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _image_size(client: int, base: int) -> Tuple[int, int]:
    """(width, height): different for every client, so a mask of the wrong image shows."""
    return base + 8 * client, (base * 3) // 4 + 4 * client


def _prompts(client: int, clicks: int, size: Tuple[int, int]) -> List[Dict[str, Any]]:
    """A person's session: up to three points added one by one (then start over), every fifth
    prompt a box; a single point asks for three candidates."""
    import numpy as np

    rng = np.random.default_rng(1000 + client)
    w, h = size
    out, points = [], []
    for k in range(clicks):
        if k % 5 == 4:
            x0, y0 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            box = [round(x0, 1), round(y0, 1), round(x0 + rng.uniform(10, w / 2), 1), round(y0 + rng.uniform(10, h / 2), 1)]
            out.append({"points": [], "box": box, "multimask": False})
            continue
        if len(points) == 3:
            points = []
        points.append([round(float(rng.uniform(0, w)), 1), round(float(rng.uniform(0, h)), 1), int(rng.random() < 0.8)])
        out.append({"points": [list(p) for p in points], "box": None, "multimask": len(points) == 1})
    return out


def _percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


async def _run_clients(base: str, args: argparse.Namespace, deadline: float) -> Dict[str, Any]:
    import httpx
    from tqdm import tqdm

    from .samples import png_bytes, shapes_image

    sizes = [_image_size(i, args.image_size) for i in range(args.clients)]
    pictures = [png_bytes(shapes_image(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]
    limits = httpx.Limits(max_connections=args.clients + 4)
    timeout = httpx.Timeout(args.request_timeout)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as http:
        # 1. every client uploads its picture, all at once
        t0 = time.perf_counter()

        # Embeddings are computed one at a time (the model lock): the last of N simultaneous
        # uploads waits for N encoder passes, so uploads get N times the per-request timeout.
        upload_timeout = httpx.Timeout(min(args.request_timeout * args.clients, args.max_seconds))

        async def upload(i: int) -> Tuple[str, float]:
            t = time.perf_counter()
            try:
                r = await http.post("/api/images", files={"file": (f"client{i}.png", pictures[i], "image/png")},
                                    timeout=upload_timeout)
            except httpx.HTTPError as exc:
                raise RuntimeError(f"client {i}: upload failed: {type(exc).__name__} {exc}") from None
            r.raise_for_status()
            body = r.json()
            if (body["width"], body["height"]) != sizes[i]:
                raise RuntimeError(f"client {i}: the server says its image is {body['width']} x {body['height']}, not {sizes[i]}")
            return body["image_id"], (time.perf_counter() - t) * 1000

        uploads = await asyncio.gather(*(upload(i) for i in range(args.clients)))
        ids = [u[0] for u in uploads]
        upload_wall = time.perf_counter() - t0
        if len(set(ids)) != args.clients:
            raise RuntimeError("two clients' different pictures got the same image id")

        # 2. all clients click at once, each one click after another
        clicks = [[Click(i, k, body) for k, body in enumerate(_prompts(i, args.clicks, sizes[i]))] for i in range(args.clients)]

        bar = tqdm(total=args.clients * args.clicks, desc="clicks", unit="click", file=sys.stderr)

        async def session(i: int) -> None:
            for c in clicks[i]:
                bar.update(1)
                if time.monotonic() > deadline:
                    c.error = "not sent: --max-seconds reached"
                    continue
                t = time.perf_counter()
                try:
                    r = await http.post(f"/api/images/{ids[i]}/predict", json=c.body)
                    c.status = r.status_code
                    if r.status_code == 200:
                        body = r.json()
                        c.masks, c.scores = body["masks"], body["scores"]
                    else:
                        c.error = r.text[:200]
                except httpx.HTTPError as exc:
                    c.error = f"{type(exc).__name__}: {exc}"
                c.latency_ms = (time.perf_counter() - t) * 1000

        t0 = time.perf_counter()
        await asyncio.gather(*(session(i) for i in range(args.clients)))
        click_wall = time.perf_counter() - t0
        bar.close()

        # 3. mix-up checks: mask sizes, then a replay of every --verify-every'th click alone
        flat = [c for per_client in clicks for c in per_client]
        ok = [c for c in flat if c.status == 200 and not c.error]
        wrong_size = [
            c for c in ok
            if any(tuple(m["size"]) != (sizes[c.client][1], sizes[c.client][0]) for m in c.masks)
        ]
        replay_mismatch, replayed = [], 0
        t0 = time.perf_counter()
        for c in tqdm(ok[:: max(1, args.verify_every)], desc="replay", unit="click", file=sys.stderr):
            if time.monotonic() > deadline:
                break
            r = await http.post(f"/api/images/{ids[c.client]}/predict", json=c.body)
            replayed += 1
            body = r.json() if r.status_code == 200 else {}
            same_masks = [m["counts"] for m in body.get("masks", [])] == [m["counts"] for m in c.masks]
            same_scores = len(body.get("scores", [])) == len(c.scores) and all(
                abs(a - b) <= 1e-4 for a, b in zip(body.get("scores", []), c.scores)
            )
            if not (same_masks and same_scores):
                replay_mismatch.append(c)
        replay_wall = time.perf_counter() - t0
        info = (await http.get("/api/info")).json()

    latencies = [c.latency_ms for c in ok]
    errors = [c for c in flat if c.status != 200 or c.error]
    return {
        "model": info["model"],
        "clients": args.clients,
        "clicks_per_client": args.clicks,
        "image_sizes": f"{sizes[0][0]}x{sizes[0][1]} .. {sizes[-1][0]}x{sizes[-1][1]}",
        "upload_ms_p50": round(_percentile([u[1] for u in uploads], 50), 1),
        "upload_wall_s": round(upload_wall, 2),
        "images_embedded": info.get("images_embedded"),
        "requests": len(flat),
        "errors": len(errors),
        "error_examples": sorted({f"{c.status}: {c.error}" for c in errors})[:3],
        "click_ms_p50": round(_percentile(latencies, 50), 1),
        "click_ms_p95": round(_percentile(latencies, 95), 1),
        "click_ms_p99": round(_percentile(latencies, 99), 1),
        "click_ms_max": round(max(latencies), 1) if latencies else None,
        "clicks_per_s": round(len(ok) / click_wall, 1) if click_wall > 0 else None,
        "click_wall_s": round(click_wall, 2),
        "wrong_size_masks": len(wrong_size),
        "replayed": replayed,
        "replay_mismatches": len(replay_mismatch),
        "replay_ms_mean": round(replay_wall / replayed * 1000, 1) if replayed else None,
        "mixed_up": len(wrong_size) + len(replay_mismatch),
        "torch_threads_server": args.threads or "default",
        "model_lock": not args.no_model_lock,
    }


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was ready")
        try:
            if httpx.get(base + "/api/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


def run_loadtest(args: argparse.Namespace) -> Dict[str, Any]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "repvit_sam.serve.loadtest", "--child", "--port", str(port), "--model", args.model,
           "--clients", str(args.clients)]
    if args.backend:
        cmd += ["--backend", args.backend]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.no_model_lock:
        cmd += ["--no-model-lock"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_ready(base, proc, timeout=min(300.0, args.max_seconds))
        print(f"server ready in {time.monotonic() - start:.1f} s; {args.clients} clients x {args.clicks} clicks ...", file=sys.stderr)
        deadline = time.monotonic() + args.max_seconds
        return asyncio.run(_run_clients(base, args, deadline))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repvit_sam.serve.loadtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny_repvit",
                   help="a model name, random weights (default tiny_repvit: the test-size RepViT-SAM, 256-px input)")
    p.add_argument("--backend", default=None, help="image-encoder backend of the server")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--clicks", type=int, default=50, help="prompts per client (default 50)")
    p.add_argument("--image-size", type=int, default=320, help="width of client 0's picture; client i's is 8 i pixels wider (default 320)")
    p.add_argument("--verify-every", type=int, default=1, help="replay every N-th click alone to compare (default 1: all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the server (default: torch's choice)")
    p.add_argument("--no-model-lock", action="store_true",
                   help="let the server run model calls concurrently (to measure what the lock costs or saves)")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request (default 120)")
    p.add_argument("--max-seconds", type=float, default=900.0, help="stop sending after this long (default 900)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return _child(args)
    for name in ("clients", "clicks", "image_size", "verify_every"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        from .cli import require_web_stack

        require_web_stack()
        result = run_loadtest(args)
    except Exception as exc:
        from ..utils import one_line

        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        from ..utils import write_json_atomic

        write_json_atomic(args.json, result)
    return 0 if result["errors"] == 0 and result["mixed_up"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
