"""Small shared helpers, each written once: atomic file writing, SHA-256 of a file, one-line
error text, optional imports that name their extra, argparse number types, image suffixes.
Torch-free, so the torch-free runtimes can use them."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Type

# File suffixes read as images when a folder is scanned (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Full SHA-256 (lower-case hex) of a file, read in ``block``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def one_line(error: object, with_type: bool = False) -> str:
    """The first non-empty line of an exception's (or any object's) text, for a one-line error
    message; the exception's class name when it has no text (prefixed if ``with_type``)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    name = type(error).__name__ if isinstance(error, BaseException) else ""
    if not lines:
        return name or ""
    return f"{name}: {lines[0]}" if with_type and name else lines[0]


def require(module: str, extra: str, error: Type[Exception] = ImportError, what: str = "") -> Any:
    """Import an optional dependency, or raise ``error`` with one line naming the extra that
    installs it: ``"onnx is not installed: pip install 'repvit-sam[export]'"``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        needed = f" ({what} needs it)" if what else ""
        raise error(f"{module.split('.')[0]} is not installed{needed}: pip install 'repvit-sam[{extra}]'") from None


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        if kind is int and "e" in text.lower():  # 1e6 is an integer too
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (>= 1), got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _current_umask() -> int:
    try:  # Linux >= 4.7: read without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, make_parents: bool = True) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file in the same folder, moved into place with
    ``os.replace`` only when the block succeeds: readers never see a half-written file, and an
    existing file survives a failed write untouched. An existing file keeps its permission
    bits; a new one gets ``0o666 & ~umask`` (not mkstemp's 0o600)."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        perms = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        perms = 0o666 & ~_current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, perms)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def resolve_device(device: "str | None") -> str:
    """The ``--device`` rule of every command: the given device, else ``cuda`` when a GPU is
    available (``cuda:LOCAL_RANK`` under torchrun), else ``cpu``."""
    if device:
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(local_rank)}" if local_rank is not None else "cuda"

