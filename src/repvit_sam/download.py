"""Fetching a file and proving it is the right one: verified, resumable downloads and SHA-256
sidecars. Model-agnostic; :mod:`repvit_sam.hub` applies it to the official checkpoints.

* Downloads stream with :mod:`urllib` into ``<dest>.part``; an existing ``.part`` is resumed with
  an HTTP ``Range`` request. Only a file whose size and SHA-256 check out is moved into place,
  with an atomic :func:`os.replace`; nothing half-written ever carries the final name. Two
  processes fetching one file are serialised by a lock file.
* ``<file>.sha256`` is a sidecar cache of a file's full SHA-256 (JSON: ``sha256``, ``size``,
  ``mtime_ns``), trusted only while the file's size and mtime are unchanged.
* A network failure is a :class:`DownloadError` (one line: the URL, the reason, where to put the
  file by hand); a file of the wrong size or hash is an :class:`IntegrityError`.
"""

from __future__ import annotations

import contextlib
import os
import hashlib
import http.client
import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional

from tqdm.auto import tqdm

from .utils import atomic_write, one_line
from .utils import file_sha256 as file_sha256_uncached
from .weights import CheckpointError, PathLike

DEFAULT_TIMEOUT = 60.0  # seconds without progress (connect, or between two reads) before giving up
_CHUNK = 1 << 20
_USER_AGENT = "repvit-sam-hub/0.1 (+urllib)"


class DownloadError(RuntimeError):
    """A file could not be fetched (network, HTTP status, timeout). The message is one line."""


class IntegrityError(CheckpointError):
    """A file's size or SHA-256 is not the expected one."""


def _part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _manual_hint(dest: Path) -> str:
    return f"put the file at {dest} or pass --checkpoint PATH"


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def _lock(dest: Path) -> Iterator[None]:
    """Serialise downloads of ``dest`` between processes (POSIX ``flock`` on ``<dest>.lock``;
    a no-op where ``fcntl`` is missing). The lock file is left in place on purpose: removing it
    would let two processes lock two different files."""
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock, the .part file is still never renamed unverified
        yield
        return
    lock_path = dest.with_name(dest.name + ".lock")
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------
# Hashing and verification


def _write_sidecar(path: Path, digest: str) -> None:
    st = path.stat()
    record = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    with atomic_write(_sidecar_path(path), "w") as f:
        f.write(json.dumps(record) + "\n")


def file_sha256(path: PathLike, *, use_cache: bool = True) -> str:
    """Full SHA-256 (lower-case hex) of ``path``.

    With ``use_cache`` the value is read from ``<path>.sha256`` when that sidecar records the
    file's current size and mtime, and the sidecar is (re)written after hashing otherwise.
    """
    p = Path(path)
    if use_cache:
        st = p.stat()
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            record = json.loads(_sidecar_path(p).read_text(encoding="utf-8"))
            digest = str(record["sha256"]).lower()
            if record["size"] == st.st_size and record["mtime_ns"] == st.st_mtime_ns and re.fullmatch(r"[0-9a-f]{64}", digest):
                return digest
    digest = file_sha256_uncached(p)
    if use_cache:
        with contextlib.suppress(OSError):  # a read-only cache still works, it just hashes again
            _write_sidecar(p, digest)
    return digest


def _check_expectations(
    actual_size: int,
    digest: Optional[str],
    *,
    sha256: Optional[str],
    sha256_prefix: Optional[str],
    size: Optional[int],
    what: str,
) -> Optional[str]:
    """The reason ``what`` fails the expectations, or None when it passes."""
    if size is not None and actual_size != size:
        return f"{what} has {actual_size} bytes, expected {size}"
    if digest is not None:
        if sha256 is not None and digest != sha256.lower():
            return f"{what} has sha256 {digest}, expected {sha256.lower()}"
        if sha256_prefix is not None and not digest.startswith(sha256_prefix.lower()):
            return f"{what} has sha256 {digest}, expected one starting with {sha256_prefix.lower()}"
    return None


def verify_file(
    path: PathLike,
    *,
    sha256: Optional[str] = None,
    sha256_prefix: Optional[str] = None,
    size: Optional[int] = None,
    use_cache: bool = True,
) -> None:
    """Raise :class:`IntegrityError` unless ``path`` has the given size and SHA-256 (full or prefix).

    The size is checked first (free); the hash only when one is expected, via :func:`file_sha256`.
    """
    p = Path(path)
    digest = file_sha256(p, use_cache=use_cache) if (sha256 or sha256_prefix) else None
    reason = _check_expectations(p.stat().st_size, digest, sha256=sha256, sha256_prefix=sha256_prefix, size=size, what=str(p))
    if reason is not None:
        raise IntegrityError(reason)


# ----------------------------------------------------------------------------------------------
# Downloading


def _content_range(value: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    """``(start, total)`` of a ``Content-Range: bytes start-end/total`` header (None where absent)."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    return int(m.group(1)), (None if m.group(2) == "*" else int(m.group(2)))


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return "timed out"
        return one_line(reason)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return one_line(exc)


def download(
    url: str,
    dest: PathLike,
    *,
    sha256: Optional[str] = None,
    sha256_prefix: Optional[str] = None,
    size: Optional[int] = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    if_missing: bool = False,
) -> Path:
    """Fetch ``url`` to ``dest`` and return ``dest`` once its size and SHA-256 are verified
    (with ``if_missing``, return an existing ``dest`` as it is, checked after taking the lock).

    Bytes go to ``<dest>.part``. If that file exists (an interrupted earlier run) only the rest is
    requested with ``Range: bytes=N-``; a server that answers ``200`` instead of ``206`` gets the
    file written again from byte 0. ``size``/``sha256``/``sha256_prefix`` (any may be None) are
    checked before the ``.part`` file is renamed to ``dest`` with :func:`os.replace`; on a mismatch
    the ``.part`` file is deleted and :class:`IntegrityError` is raised. A network failure keeps the
    ``.part`` file (the next call resumes) and raises :class:`DownloadError` with a one-line
    message. ``timeout`` is in seconds, for connecting and for each read. ``dest``'s full SHA-256
    is recorded in ``<dest>.sha256``.
    """
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest):
        if if_missing and dest.exists():
            return dest
        return _download_locked(url, dest, sha256=sha256, sha256_prefix=sha256_prefix, size=size, progress=progress, timeout=timeout)


def _hash_prefix_of(part: Path) -> "hashlib._Hash":
    """A SHA-256 object fed with the bytes already in ``part`` (so a resumed download is hashed
    once, while it streams, instead of being read again at the end)."""
    hasher = hashlib.sha256()
    with open(part, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            hasher.update(block)
    return hasher


def _download_locked(
    url: str,
    dest: Path,
    *,
    sha256: Optional[str],
    sha256_prefix: Optional[str],
    size: Optional[int],
    progress: bool,
    timeout: float,
) -> Path:
    part = _part_path(dest)

    def fail(exc: BaseException) -> DownloadError:
        kept = part.stat().st_size if part.exists() else 0
        resume = f"; {kept} bytes kept in {part}, run again to resume" if kept else ""
        return DownloadError(f"could not download {url} ({_network_reason(exc)}){resume}; {_manual_hint(dest)}")

    def reject(reason: str) -> IntegrityError:
        _unlink(part)
        return IntegrityError(f"download of {url} rejected: {reason}; the partial file was deleted; {_manual_hint(dest)}")

    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # cannot be a prefix of the right file
        _unlink(part)
        offset = 0

    if size is not None and offset == size:  # an earlier run got every byte: only verify
        hasher = _hash_prefix_of(part)
    else:
        response, offset, total, body = _negotiate(url, part, offset, timeout, fail)
        with response:
            if size is not None and total is not None and total != size:
                raise reject(f"the server reports {total} bytes, expected {size}")
            hasher = _hash_prefix_of(part) if offset else hashlib.sha256()
            received = offset
            with tqdm(
                total=total if total is not None else size,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar, open(part, "ab" if offset else "wb") as out:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        out.flush()
                        raise fail(e) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if body is not None and received < offset + body:
            raise fail(ConnectionError(f"connection closed after {received} of {offset + body} bytes"))

    digest = hasher.hexdigest()
    reason = _check_expectations(part.stat().st_size, digest, sha256=sha256, sha256_prefix=sha256_prefix, size=size, what="the file")
    if reason is not None:
        raise reject(reason)
    os.replace(part, dest)
    with contextlib.suppress(OSError):
        _write_sidecar(dest, digest)
    return dest


def _negotiate(
    url: str, part: Path, offset: int, timeout: float, fail: Callable[[BaseException], DownloadError]
) -> tuple[http.client.HTTPResponse, int, Optional[int], Optional[int]]:
    """Open ``url`` from byte ``offset`` and return ``(response, offset, total, body)``.

    ``offset`` is where the body starts in the file: the one asked for when the server answered
    ``206`` with that range, else 0 (a ``200``, or a ``206``/``416`` that does not fit our ``.part``,
    which is then deleted and the file requested whole). ``total`` is the file's full length and
    ``body`` the body's, where the headers state them.
    """
    for _ in range(2):
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and offset > 0:  # our .part is not a prefix of what the server has
                _unlink(part)
                offset = 0
                continue
            raise fail(e) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            raise fail(e) from None
        length = response.headers.get("Content-Length", "")
        body = int(length) if length.strip().isdigit() else None
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start == offset:
                return response, offset, total, body
            response.close()  # a range we did not ask for: start over
            _unlink(part)
            offset = 0
            continue
        if response.status == 200:  # the whole file, whatever was asked
            return response, 0, body, body
        response.close()
        raise fail(RuntimeError(f"unexpected HTTP status {response.status}"))
    raise fail(RuntimeError("the server did not answer a request for the whole file"))
