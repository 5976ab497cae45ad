"""Writing a task's results: ``results.json`` (everything) and ``results.md`` (a table)."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from .tasks.common import TaskResult


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN / inf to None, tuples to lists, paths to str."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1.5 else f"{v:.1f}"
    return str(v)


def markdown_table(rows: List[Tuple[str, Dict[str, Any]]]) -> str:
    cols: List[str] = []
    for _, metrics in rows:
        cols += [k for k in metrics if k not in cols]
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for label, metrics in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(metrics.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def write_results(out_dir: Path, result: TaskResult, model: Dict[str, Any], extra: Dict[str, Any] | None = None) -> Tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir`` (atomically); return both paths."""
    from .. import __version__
    from ..utils import atomic_write, write_json_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "task": result.task,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "repvit_sam_version": __version__,
        "model": model,
        "protocol": result.protocol,
        **(extra or {}),
        "overall": result.overall,
        ("per_image" if result.unit == "images" else f"per_{result.unit.rstrip('s')}"): result.per_image,
    }
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    write_json_atomic(json_path, _clean(doc))
    ckpt = model.get("checkpoint_sha256") or model.get("weights_sha256") or "?"
    md = [
        f"# repvit-sam eval {result.task}",
        "",
        f"Model: `{model.get('name')}` (checkpoint sha256 `{str(ckpt)[:16]}…`), {len(result.per_image)} {result.unit}.",
        "",
        markdown_table(result.table),
        "",
        "Protocol:",
        "",
        *[f"- {k}: {_fmt(v) if not isinstance(v, (list, dict)) else v}" for k, v in result.protocol.items()],
        "",
    ]
    with atomic_write(md_path, "w") as f:
        f.write("\n".join(md))
    return json_path, md_path
