"""Checkpoint files: safe reading, unwrapping, key remapping and a clear report on mismatch.

Reading never executes code from the file (``torch.load(..., weights_only=True)``). Anything
that is not a state_dict of tensors is refused with a :class:`CheckpointError` that says what
the file is and what to do.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .utils import one_line

StateDict = Dict[str, torch.Tensor]
PathLike = str | os.PathLike

# Containers that training scripts wrap a state_dict in, tried in this order.
WRAPPER_KEYS: Tuple[str, ...] = ("model", "state_dict", "model_state_dict", "module", "ema", "model_ema")
# Prefixes added by DataParallel/DDP ("module."), torch.compile ("_orig_mod."), and by
# trainers that keep the network as ``self.model`` ("model."). Stripped when every key has one.
STRIP_PREFIXES: Tuple[str, ...] = ("module.", "_orig_mod.", "model.")

_HOW_TO_GET = "Use an official file (repvit_sam.pt, mobile_sam.pt, sam_vit_*.pth) or a state_dict saved with torch.save"


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read, or does not fit the model it was loaded into."""


def read_checkpoint(path: PathLike) -> Any:
    """Load a file with ``torch.load(weights_only=True)`` on the CPU, turning failures into
    :class:`CheckpointError`. Zip-format files are memory-mapped (no second copy in RAM)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {p}")
    is_zip = zipfile.is_zipfile(p)
    if not is_zip:
        with open(p, "rb") as f:
            head = f.read(2)
        if head[:1] != b"\x80":  # not a pickle stream (protocol >= 2) either
            kind = "a zip archive that is truncated or damaged" if head == b"PK" else "not a PyTorch checkpoint"
            raise CheckpointError(f"{p} is {kind} (it starts with {head!r}); {_HOW_TO_GET}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        detail = str(e).strip().splitlines()
        reason = next((line for line in detail if "Unsupported" in line or "global" in line.lower()), detail[0] if detail else "")
        raise CheckpointError(
            f"refused to load {p}: it holds pickled objects other than tensors ({reason.strip()}); "
            f"nothing from it was executed. {_HOW_TO_GET}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{p} is not a readable checkpoint (truncated or corrupt?): {one_line(e)}") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, source: str = "checkpoint") -> StateDict:
    """Find the state_dict in a loaded checkpoint and normalise its keys.

    Accepts a plain ``{name: tensor}`` dict, or one nested under any of ``WRAPPER_KEYS``
    (``{"model": ...}``, ``{"state_dict": ...}``, ...), with ``STRIP_PREFIXES`` removed when
    every key carries the same one (``module.`` from DDP, for example).
    """
    seen = 0
    while not _is_state_dict(obj):
        if not isinstance(obj, Mapping) or seen > 4:
            raise CheckpointError(f"{source} does not contain a state_dict of tensors (found {type(obj).__name__})")
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            keys = ", ".join(map(repr, list(obj)[:8]))
            raise CheckpointError(
                f"{source} is a dict without tensors under a known key ({', '.join(WRAPPER_KEYS)}); "
                f"its keys are: {keys}"
            )
        obj = inner
        seen += 1
    sd: StateDict = dict(obj)
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd


@dataclass
class KeyReport:
    """How a state_dict differs from a model's: keys missing, unexpected, or of another shape."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)  # key, file, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, first: int = 5) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:first]) + (", ..." if len(items) > first else "")
                parts.append(f"{len(items)} {label} ({shown})")
        if self.mismatched:
            shown = ", ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched[:first])
            parts.append(f"{len(self.mismatched)} with another shape ({shown}{', ...' if len(self.mismatched) > first else ''})")
        return "; ".join(parts) if parts else "all keys match"


def compare_keys(state_dict: Mapping[str, Any], expected: Mapping[str, Tuple[int, ...]]) -> KeyReport:
    """Compare a state_dict (values: tensors or shapes) with ``{key: shape}`` of a model."""
    shapes = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v) for k, v in state_dict.items()}
    report = KeyReport(
        missing=[k for k in expected if k not in shapes],
        unexpected=[k for k in shapes if k not in expected],
    )
    report.mismatched = [(k, shapes[k], tuple(expected[k])) for k in expected if k in shapes and shapes[k] != tuple(expected[k])]
    return report


def model_key_shapes(model: nn.Module) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def match_fraction(state_dict: Mapping[str, Any], expected: Mapping[str, Tuple[int, ...]]) -> float:
    """Share of the union of keys that are present in both with the same shape (0..1)."""
    r = compare_keys(state_dict, expected)
    good = len(expected) - len(r.missing) - len(r.mismatched)
    total = len(expected) + len(r.unexpected)
    return good / total if total else 0.0


def guess_variant(state_dict: Mapping[str, Any], candidates: Mapping[str, Mapping[str, Tuple[int, ...]]]) -> Optional[Tuple[str, float]]:
    """The candidate whose key/shape table best matches, with its match fraction (or None)."""
    scored = [(name, match_fraction(state_dict, table)) for name, table in candidates.items()]
    if not scored:
        return None
    return max(scored, key=lambda t: t[1])


def check_fits(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, Tuple[int, ...]],
    *,
    variant: str,
    source: str,
    known_tables: Optional[Iterable[Tuple[str, Mapping[str, Tuple[int, ...]]]]] = None,
) -> None:
    """Raise one CheckpointError unless ``state_dict`` has exactly the keys and shapes of
    ``expected``; it names the missing, unexpected and mis-shaped keys and, given
    ``known_tables``, the variant the file resembles."""
    report = compare_keys(state_dict, expected)
    if report.ok:
        return
    msg = f"{source} does not fit model {variant!r}: {report.summary()}."
    if known_tables is not None:
        guess = guess_variant(state_dict, dict(known_tables))
        if guess is not None and guess[0] != variant and guess[1] >= 0.5:
            msg += f" The file looks like a {guess[0]!r} checkpoint ({guess[1]:.0%} of keys match): try build_sam({guess[0]!r}, checkpoint=...)."
        elif guess is not None and guess[1] < 0.5:
            msg += " It does not resemble any known variant."
    raise CheckpointError(msg)


def load_into(
    model: nn.Module,
    state_dict: StateDict,
    *,
    variant: str,
    source: str,
    known_tables: Optional[Iterable[Tuple[str, Mapping[str, Tuple[int, ...]]]]] = None,
) -> None:
    """Strictly load ``state_dict`` into ``model``, after :func:`check_fits`."""
    check_fits(state_dict, model_key_shapes(model), variant=variant, source=source, known_tables=known_tables)
    model.load_state_dict(state_dict, strict=True)
