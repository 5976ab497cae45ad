"""Parity with the original RepViT-SAM / MobileSAM code, on its own reference outputs.

The fixtures live in ../shared/parity beside the repository (made by the original code with
random weights). In a user's clone they are absent and these tests are skipped.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

PARITY_DIR = Path(os.environ.get("REPVIT_SAM_PARITY_DIR", Path(__file__).resolve().parents[2] / "shared" / "parity"))
SCRIPT = PARITY_DIR / "check_parity.py"

pytestmark = pytest.mark.skipif(
    not SCRIPT.exists(),
    reason=f"parity fixtures not found at {PARITY_DIR} (they sit beside the repo as ../shared/parity; set REPVIT_SAM_PARITY_DIR)",
)


def _checker():
    spec = importlib.util.spec_from_file_location("check_parity", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("model,fused", [("repvit", False), ("repvit", True), ("vit_t", False)], ids=["repvit", "repvit+fused", "vit_t"])
def test_parity_with_original_code(model, fused):
    results = _checker().run(model, fused=fused)
    failures = [line for ok, line in results if not ok]
    assert len(results) == 13 and not failures, "\n".join(failures)
