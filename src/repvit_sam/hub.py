"""Checkpoint manager: where official weights live, how they are fetched, and proof that a file is right.

Conventions
-----------
* Cache: ``$REPVIT_SAM_HOME`` when set (``~`` is expanded), otherwise ``~/.cache/repvit_sam``.
  Each official file is kept there under its upstream file name (``repvit_sam.pt``,
  ``mobile_sam.pt``, ``sam_vit_b_01ec64.pth``, ...), so a file fetched by hand can simply be
  dropped in.
* Downloads stream with :mod:`urllib` into ``<dest>.part``; an existing ``.part`` is resumed with an
  HTTP ``Range`` request. Only a file whose size and SHA-256 check out is moved into place, with an
  atomic :func:`os.replace`; nothing half-written ever carries the final name.
* Every file this module writes (downloads, hash sidecars) is written to a temporary name in the
  same directory and renamed over the target, so readers see the old file or the new one, never a
  mix.
* ``<file>.sha256`` is a sidecar cache of a file's full SHA-256 (JSON: ``sha256``, ``size``,
  ``mtime_ns``). It is trusted only while the file's size and mtime are unchanged, so a
  multi-gigabyte checkpoint is hashed once, not on every start.
* Errors: a network failure is a :class:`DownloadError` (a ``RuntimeError``) whose message is one
  line naming the URL, the reason, and the path where the file can be put by hand. A file that is
  not what it should be is a :class:`~repvit_sam.weights.CheckpointError` (hash/size:
  :class:`IntegrityError`; missing: :class:`CheckpointNotFoundError`, also a ``FileNotFoundError``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import registry
from .config import resolve_name
from .modeling.sam import Sam
from .download import (  # noqa: F401  (re-exported: the hub's public API)
    DEFAULT_TIMEOUT,
    DownloadError,
    IntegrityError,
    download,
    file_sha256,
    verify_file,
)
from .download import download as fetch  # resolve_checkpoint's argument `download` shadows the name
from .weights import CheckpointError, PathLike, check_fits, extract_state_dict, read_checkpoint

__all__ = [
    "CheckpointNotFoundError",
    "CheckpointSpec",
    "DownloadError",
    "IntegrityError",
    "KNOWN_CHECKPOINTS",
    "cache_dir",
    "cached_path",
    "check_keys",
    "download",
    "file_sha256",
    "load_pretrained",
    "resolve_checkpoint",
    "verify_file",
]

ENV_HOME = "REPVIT_SAM_HOME"


@dataclass(frozen=True)
class CheckpointSpec:
    """One official checkpoint file.

    ``size_bytes`` and ``sha256`` are ``None`` where no public source states them; then only the
    key/shape table of the model vouches for the file. ``sha256_prefix`` is the leading hex digits
    of the SHA-256 where the publisher encodes them in the file name (SAM does).
    """

    model: str
    filename: str
    url: str
    size_bytes: Optional[int]
    sha256: Optional[str]
    sha256_prefix: Optional[str]
    license: str
    source: str


# The hex in SAM's file names (01ec64, 0b3195, 4b8939) is NOT the start of the file's SHA-256
# (which begin ec2df6, 3adcc4, a7bf3b): it is the start of the MD5, e.g. sam_vit_h's MD5
# 4b8939a88964f0f4ff5f5b2642c598a6 as pinned by several downloaders found by code search. Using it
# as ``sha256_prefix`` would reject the genuine files, so SAM's specs carry the full SHA-256 instead.
#
# Sizes and full hashes below were taken from public records, never computed or guessed here:
# Git LFS pointer files on the Hugging Face Hub, whose ``oid sha256:`` is by definition the SHA-256
# of the file's content and whose ``size`` is its length in bytes. Re-uploads by several unrelated
# accounts agree with each other and with the hashes pinned in other projects' download code.
KNOWN_CHECKPOINTS: dict[str, CheckpointSpec] = {
    "repvit": CheckpointSpec(
        model="repvit",
        filename="repvit_sam.pt",
        # URL: THU-MIG/RepViT, sam/README.md ("Installation": wget .../releases/download/v1.0/repvit_sam.pt).
        url="https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_sam.pt",
        # Size and SHA-256: NOT confirmed by any public source found (searched code, docs, issues
        # and pages for the release asset and for LFS pointers of re-uploads), so left unset; the
        # key/shape check against the RepViT-SAM table is what verifies this file.
        size_bytes=None,
        sha256=None,
        sha256_prefix=None,
        license="Apache-2.0",
        source="THU-MIG/RepViT GitHub release v1.0",
    ),
    "vit_t": CheckpointSpec(
        model="vit_t",
        filename="mobile_sam.pt",
        # URL: the file weights/mobile_sam.pt in ChaoningZhang/MobileSAM, raw download (the form used
        # by e.g. HumanSignal/label-studio-ml-backend .../segment_anything_model/download_models.sh).
        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        # Size and SHA-256: LFS pointers of re-uploads,
        #   https://huggingface.co/iulia-elisa/XAMI-model/commit/a82e1f78411fa0ee9ee18befa1c9af36dc828493
        #   https://huggingface.co/licyk/controlnet_v1.1_annotator/commit/9a2c6087c9e787a3e8f37d2f64960f20a1a32fb1
        # (oid sha256:6dbb9052..., size 40728226); the same SHA-256 is pinned for "vit_t" in
        # computational-cell-analytics/micro-sam, micro_sam/util.py (_CHECKSUMS), which downloads
        # from the MobileSAM repository itself.
        size_bytes=40_728_226,
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        sha256_prefix=None,
        license="Apache-2.0",
        source="ChaoningZhang/MobileSAM repository, weights/mobile_sam.pt",
    ),
    "vit_b": CheckpointSpec(
        model="vit_b",
        filename="sam_vit_b_01ec64.pth",
        # URL: facebookresearch/segment-anything README, "Model Checkpoints".
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        # Size and SHA-256: LFS pointers, e.g.
        #   https://huggingface.co/andzhang01/segment_anything/commit/c862f42541f40f5a5830d8d2551199e7d9358297
        #   https://huggingface.co/netradrishti/sam/commit/0ca332df7096f034b3d7f18f9ce6b6912dbce70b
        #   https://huggingface.co/mashb1t/misc/commit/78e181357bf2e286bf2e76635c0b5cd89583c5d9
        # (oid sha256:ec2df627..., size 375042383); micro-sam's _CHECKSUMS agrees on the hash.
        size_bytes=375_042_383,
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        sha256_prefix=None,  # "01ec64" in the name is an MD5 prefix, not a SHA-256 one (see above)
        license="Apache-2.0",
        source="facebookresearch/segment-anything, dl.fbaipublicfiles.com",
    ),
    "vit_l": CheckpointSpec(
        model="vit_l",
        filename="sam_vit_l_0b3195.pth",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        # Size and SHA-256: LFS pointers, e.g.
        #   https://huggingface.co/andzhang01/segment_anything/commit/99466851cb3f441191094596ec2396dd38cee644
        #   https://huggingface.co/netradrishti/sam/commit/0ca332df7096f034b3d7f18f9ce6b6912dbce70b
        #   https://huggingface.co/spaces/lemonaddie/geowizard/commit/c9708de8fb280f06a8166a9acf85435af87f7b16
        # (oid sha256:3adcc431..., size 1249524607); micro-sam's _CHECKSUMS agrees on the hash.
        size_bytes=1_249_524_607,
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        sha256_prefix=None,
        license="Apache-2.0",
        source="facebookresearch/segment-anything, dl.fbaipublicfiles.com",
    ),
    "vit_h": CheckpointSpec(
        model="vit_h",
        filename="sam_vit_h_4b8939.pth",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        # Size and SHA-256: LFS pointers, e.g.
        #   https://huggingface.co/andzhang01/segment_anything/commit/d579a94be8a2b17e806578b86bb02bcd82ab66a6
        #   https://huggingface.co/netradrishti/sam/commit/0ca332df7096f034b3d7f18f9ce6b6912dbce70b
        #   https://huggingface.co/spaces/TencentARC/BrushNet/commit/7c682c58b906cb43063f6b8985e745ef107ba743
        # (oid sha256:a7bf3b02..., size 2564550879); micro-sam's _CHECKSUMS agrees on the hash.
        size_bytes=2_564_550_879,
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        sha256_prefix=None,
        license="Apache-2.0",
        source="facebookresearch/segment-anything, dl.fbaipublicfiles.com",
    ),
}


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path that was asked for does not exist (and may not be downloaded)."""


# ----------------------------------------------------------------------------------------------
# Paths and small helpers


def cache_dir() -> Path:
    """``$REPVIT_SAM_HOME`` if set and non-empty, else ``~/.cache/repvit_sam`` (not created here)."""
    env = os.environ.get(ENV_HOME, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "repvit_sam"


def cached_path(name: str) -> Path:
    """Where the official checkpoint of model ``name`` (or an alias) is kept in the cache."""
    return cache_dir() / _spec(name).filename


def _spec(name: str) -> CheckpointSpec:
    key = resolve_name(name)
    try:
        return KNOWN_CHECKPOINTS[key]
    except KeyError:
        raise KeyError(f"no official checkpoint is known for model {key!r}; pass checkpoint=PATH") from None


def check_keys(path: PathLike, name: str) -> None:
    """Raise :class:`CheckpointError` unless the state_dict in ``path`` has exactly the keys and
    shapes of model ``name`` (read with ``weights_only=True``; nothing in the file is executed)."""
    key = resolve_name(name)
    sd = extract_state_dict(read_checkpoint(path), source=str(path))
    check_fits(sd, registry.key_shapes(key), variant=key, source=str(path))


# ----------------------------------------------------------------------------------------------
# Resolving and loading


def resolve_checkpoint(
    name: str,
    checkpoint: Optional[PathLike] = None,
    *,
    download: bool = True,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    verify_keys: bool = True,
) -> Path:
    """The path of a checkpoint for model ``name`` (official name or alias), verified.

    * ``checkpoint`` given: that path, as is (it must exist; never hashed, never downloaded; its
      keys are checked when the model loads it).
    * otherwise the official file in :func:`cache_dir`, downloaded first when missing and
      ``download`` is true. Before it is returned the file's size and SHA-256 are checked where
      they are known (the hash is cached in ``<file>.sha256``) and its state_dict is compared with
      the model's key/shape table (``verify_keys=False`` skips that read, for a caller that
      loads the file strictly right after, as :func:`load_pretrained` does).

    Raises :class:`CheckpointNotFoundError`, :class:`DownloadError`, :class:`IntegrityError` or
    :class:`~repvit_sam.weights.CheckpointError` (wrong keys, unreadable file).
    """
    key = resolve_name(name)
    if checkpoint is not None:
        p = Path(checkpoint).expanduser()
        if not p.exists():
            raise CheckpointNotFoundError(f"checkpoint not found: {p}")
        if not p.is_file():
            raise CheckpointNotFoundError(f"checkpoint path is not a file: {p}")
        return p

    spec = _spec(key)
    path = cache_dir() / spec.filename
    if not path.exists():
        if not download:
            raise CheckpointNotFoundError(
                f"no checkpoint for {key!r} at {path} and downloading is off; "
                f"download {spec.url} to that path or pass --checkpoint PATH"
            )
        # another process may fetch it while we wait for the lock: then it is used as it is
        fetch(spec.url, path, sha256=spec.sha256, sha256_prefix=spec.sha256_prefix, size=spec.size_bytes,
              progress=progress, timeout=timeout, if_missing=True)

    try:
        verify_file(path, sha256=spec.sha256, sha256_prefix=None if spec.sha256 else spec.sha256_prefix, size=spec.size_bytes)
    except IntegrityError as e:
        raise IntegrityError(
            f"{e} (not the official {key!r} checkpoint from {spec.url}); delete it to download it again, "
            f"or pass --checkpoint PATH to use it anyway"
        ) from None
    if verify_keys:
        check_keys(path, key)
    return path


def load_pretrained(
    name: str,
    checkpoint: Optional[PathLike] = None,
    device: Optional[str | torch.device] = None,
    download: bool = True,
    *,
    progress: bool = True,
) -> Sam:
    """``build_sam(name)`` with the weights from :func:`resolve_checkpoint` (the official file,
    fetched into the cache when missing, unless ``checkpoint`` names another), in eval mode on
    ``device`` (default CPU). ``progress`` shows a download progress bar on stderr."""
    # build_sam checks the keys strictly while loading: reading the file once is enough.
    path = resolve_checkpoint(name, checkpoint, download=download, progress=progress, verify_keys=False)
    return registry.build_sam(name, checkpoint=path, device=device)
