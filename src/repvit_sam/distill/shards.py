"""Teacher embeddings on disk: fp16 ``.npy`` shards, one JSON record per shard, one index.

Layout of an embeddings folder::

    plan.json            what is being computed: teacher, input size, shard size, the image keys
    shard_00000.npy      (n, C, H, W) float16, images plan["keys"][0:n]
    shard_00000.json     {"keys", "shape", "sha256", "bytes"} - written after the .npy: a shard is
                         finished exactly when its record exists
    ...
    index.json           plan + every shard's record; written once all shards are finished

Every file is written to a temporary name and renamed into place, so a killed run leaves whole
files or none; a re-run skips finished shards. ``.npy`` files hold no pickles; readers memory-map
them and check each shard's SHA-256 before first use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..utils import atomic_write, file_sha256, write_json_atomic

FORMAT_VERSION = 1
PLAN, INDEX = "plan.json", "index.json"
_RERUN = "re-run `repvit-sam distill embed` with the same arguments to rebuild it"


class ShardError(RuntimeError):
    """An embeddings folder that is incomplete, inconsistent or corrupt."""


def shard_name(i: int) -> str:
    return f"shard_{i:05d}"


def make_plan(keys: Sequence[str], shard_size: int, meta: Dict[str, Any]) -> Dict[str, Any]:
    n = len(keys)
    return {
        "format": FORMAT_VERSION,
        **meta,
        "shard_size": int(shard_size),
        "num_images": n,
        "num_shards": (n + shard_size - 1) // shard_size,
        "keys": list(keys),
    }


def shard_keys(plan: Dict[str, Any], i: int) -> List[str]:
    s = plan["shard_size"]
    return plan["keys"][i * s : (i + 1) * s]


_PLAN_IDENTITY = ("format", "teacher", "img_size", "embed_shape", "shard_size", "keys")


def open_plan(out: Path, plan: Dict[str, Any]) -> None:
    """Write ``plan.json``, or check that the one already there describes the same work."""
    path = out / PLAN
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = [k for k in _PLAN_IDENTITY if old.get(k) != plan.get(k)]
        if diff:
            raise ShardError(
                f"{out} already holds embeddings of other work (different {', '.join(diff)}); "
                f"use a new --output folder, or the original arguments to resume"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, plan)


def is_finished(out: Path, plan: Dict[str, Any], i: int) -> bool:
    rec_path = out / f"{shard_name(i)}.json"
    npy = out / f"{shard_name(i)}.npy"
    if not (rec_path.exists() and npy.exists()):
        return False
    try:
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return rec.get("keys") == shard_keys(plan, i) and npy.stat().st_size == rec.get("bytes")


def write_shard(out: Path, i: int, keys: Sequence[str], embeddings: np.ndarray) -> Dict[str, Any]:
    """Write shard ``i`` (``.npy`` then its record), atomically; returns the record."""
    arr = np.ascontiguousarray(embeddings, dtype=np.float16)
    if arr.shape[0] != len(keys):
        raise ValueError(f"shard {i}: {arr.shape[0]} embeddings for {len(keys)} keys")
    npy = out / f"{shard_name(i)}.npy"
    with atomic_write(npy) as f:
        np.save(f, arr, allow_pickle=False)
    record = {
        "file": npy.name,
        "keys": list(keys),
        "shape": list(arr.shape),
        "sha256": file_sha256(npy),
        "bytes": npy.stat().st_size,
    }
    write_json_atomic(out / f"{shard_name(i)}.json", record)
    return record


def finalize_index(out: Path, plan: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Write ``index.json`` when every shard is finished (any rank may call it; the content is
    the same whoever writes it). Returns the index, or None while shards are missing."""
    records = []
    for i in range(plan["num_shards"]):
        if not is_finished(out, plan, i):
            return None
        records.append(json.loads((out / f"{shard_name(i)}.json").read_text(encoding="utf-8")))
    index = {k: v for k, v in plan.items() if k != "keys"}
    index["shards"] = [{k: r[k] for k in ("file", "shape", "sha256", "bytes")} | {"keys": r["keys"]} for r in records]
    write_json_atomic(out / INDEX, index)
    return index


class EmbeddingStore:
    """Read-only access to a finished embeddings folder: ``store[j]`` is the j-th image's
    embedding (C, H, W) as float32; ``store.keys`` the image keys in order.

    Each shard is memory-mapped on first use, after its SHA-256 is checked against the index
    (``verify=False`` skips the check)."""

    def __init__(self, root: Path, verify: bool = True) -> None:
        self.root = Path(root)
        path = self.root / INDEX
        if not path.exists():
            done = len(list(self.root.glob("shard_*.json"))) if self.root.is_dir() else 0
            if not self.root.is_dir() or not (self.root / PLAN).exists():
                raise ShardError(f"no embeddings found in {self.root} (no {INDEX}); run `repvit-sam distill embed --output {self.root}` first")
            total = json.loads((self.root / PLAN).read_text(encoding="utf-8"))["num_shards"]
            raise ShardError(f"embeddings in {self.root} are incomplete ({done} of {total} shards finished); {_RERUN.replace('it', 'the rest')}")
        try:
            self.index = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ShardError(f"{path} is not valid JSON ({e}); {_RERUN}") from None
        if self.index.get("format") != FORMAT_VERSION:
            raise ShardError(f"{path}: unsupported embeddings format {self.index.get('format')!r} (expected {FORMAT_VERSION})")
        self.verify = verify
        self.keys: List[str] = [k for s in self.index["shards"] for k in s["keys"]]
        self._loc: List[Tuple[int, int]] = [(si, j) for si, s in enumerate(self.index["shards"]) for j in range(len(s["keys"]))]
        self._open: Dict[int, np.ndarray] = {}
        self.embed_shape = tuple(self.index["embed_shape"])

    def __len__(self) -> int:
        return len(self.keys)

    def check(self, si: int) -> None:
        """Raise ShardError unless shard ``si`` exists and its SHA-256 matches the index."""
        rec = self.index["shards"][si]
        npy = self.root / rec["file"]
        if not npy.exists():
            raise ShardError(f"shard {npy} is missing; {_RERUN}")
        digest = file_sha256(npy)
        if digest != rec["sha256"]:
            raise ShardError(
                f"shard {npy} is corrupt: SHA-256 {digest[:12]}... does not match the index "
                f"({rec['sha256'][:12]}...); delete it and {rec['file'][:-4]}.json, then {_RERUN}"
            )

    def _shard(self, si: int) -> np.ndarray:
        arr = self._open.get(si)
        if arr is None:
            rec = self.index["shards"][si]
            npy = self.root / rec["file"]
            if self.verify:
                self.check(si)
            elif not npy.exists():
                raise ShardError(f"shard {npy} is missing; {_RERUN}")
            try:
                arr = np.load(npy, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as e:
                raise ShardError(f"shard {npy} cannot be read ({e}); delete it and {_RERUN}") from None
            if list(arr.shape) != rec["shape"]:
                raise ShardError(f"shard {npy} has shape {list(arr.shape)}, the index says {rec['shape']}; {_RERUN}")
            self._open[si] = arr
        return arr

    def verify_all(self) -> None:
        for si in range(len(self.index["shards"])):
            self.check(si)

    def __getitem__(self, j: int) -> torch.Tensor:
        si, row = self._loc[j]
        return torch.from_numpy(np.array(self._shard(si)[row], dtype=np.float32))

    def __getstate__(self) -> Dict[str, Any]:  # DataLoader workers re-open the memory maps
        state = dict(self.__dict__)
        state["_open"] = {}
        state["verify"] = False  # checked in the main process before workers start
        return state
