"""``repvit-sam serve``: the web demo on http://127.0.0.1:7860 (FastAPI + uvicorn).

Only argparse at import time: the web stack (the ``serve`` extra) and torch are
imported when the command runs.
"""

from __future__ import annotations

import argparse

from ..utils import positive_float, positive_int

LOOPBACK = ("127.0.0.1", "localhost", "::1")
EXTRA_HINT = "pip install 'repvit-sam[serve]'"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {text!r}")
    return value


def require_web_stack() -> None:
    """One-line error naming the extra when FastAPI / uvicorn / python-multipart are missing."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"repvit-sam serve needs {', '.join(missing)}: {EXTRA_HINT}")


def check_port_free(host: str, port: int) -> None:
    import socket

    from ..cli import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UsageError(f"serve: cannot listen on {host}:{port} ({exc.strerror}); pass another --port or --host") from None


def build_model(args: argparse.Namespace):
    """(model ready for inference, its name) from --model / --checkpoint / --random-weights."""
    from ..cli import UsageError, load_model

    if args.random_weights:
        if args.checkpoint is not None:
            raise UsageError("serve: --random-weights and --checkpoint exclude each other")
        import torch

        from ..modeling.fuse import fuse_model
        from ..registry import build_sam

        torch.manual_seed(0)
        name = args.model or "repvit"
        return fuse_model(build_sam(name, device=args.device), inplace=True), f"{name} (random weights)"
    return load_model(args)


def run(args: argparse.Namespace) -> int:
    """Start the web demo: open the printed address in a browser."""
    import sys

    from ..cli import UsageError

    require_web_stack()
    if args.max_upload_mb <= 0 or args.max_pixels < 1 or args.cache_size < 1:
        raise UsageError("serve: --max-upload-mb, --max-pixels and --cache-size must be positive")
    check_port_free(args.host, args.port)

    import uvicorn

    from .app import create_app

    model, name = build_model(args)
    app = create_app(
        model, model_name=name, backend=args.backend,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels, cache_size=args.cache_size,
    )
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}: anyone who can reach it can upload images and use this "
              f"machine's CPU; there is no authentication", file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"repvit-sam serve: {name} on http://{host}:{args.port}/  (Ctrl+C to stop)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Serve one page and a JSON API (OpenAPI at /docs): open or drop an image, click to segment.
    Each image is embedded once; each click is one decoder pass."""
    from ..backends import BACKENDS
    from ..cli import add_model_args

    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    add_model_args(p)
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="image-encoder backend (see repvit-sam bench); default: the fused model as it is")
    p.add_argument("--random-weights", action="store_true",
                   help="random weights instead of a checkpoint (to try the page without downloading; masks are noise)")
    p.add_argument("--max-upload-mb", type=positive_float, default=20.0, help="largest upload in MiB (default 20)")
    p.add_argument("--max-pixels", type=positive_int, default=40_000_000,
                   help="largest image in pixels, checked before decoding (default 40000000)")
    p.add_argument("--cache-size", type=positive_int, default=16, help="embedded images kept in memory, LRU (default 16)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default info)")


__all__ = ["add_arguments", "run"]
