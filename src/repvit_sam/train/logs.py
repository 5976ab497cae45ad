"""Training logs: ``RUN/metrics.jsonl`` (always), TensorBoard events (when installed), and the
peak memory of this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import torch

from ..utils import atomic_write
from .launch import log


class Metrics:
    """Rank 0's logs: ``metrics.jsonl`` and TensorBoard (``RUN/tb``) when it is installed.

    On resume at step ``s``, records after ``s`` (logged by the killed run, redone now) are
    dropped from the JSONL and purged from TensorBoard."""

    def __init__(self, run: Path, enabled: bool, resume_step: int, extra: str = "distill") -> None:
        self.enabled = enabled
        self.path = run / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            keep = [ln for ln in self.path.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= resume_step]
            with atomic_write(self.path, "w") as f:
                f.write("".join(ln + "\n" for ln in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tb"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:
            log.warning("tensorboard is not installed: metrics go to %s only (pip install 'repvit-sam[%s]')", self.path, extra)

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def peak_memory_bytes(device: torch.device) -> int:
    """This process's peak memory: the CUDA allocator's peak on a GPU, else the peak resident
    set size (``VmHWM``) of the process (DataLoader worker processes not included)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
