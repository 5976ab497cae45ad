"""The shared rank split (repvit_sam.parallel) as `everything` uses it: two ranks segment
disjoint halves of a folder, image ids stay global, and a re-run skips finished images."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from repvit_sam.everything import Job, run_all
from repvit_sam.parallel import Share


class _Stub:
    """A generator that returns no mask; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, image):
        self.calls += 1
        return []


def test_two_ranks_split_a_folder_and_resume(tmp_path):
    jobs = []
    for i in range(5):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(p)
        jobs.append(Job(p, p.relative_to(tmp_path).with_suffix("")))
    out = tmp_path / "out"
    out.mkdir()
    stubs = [_Stub(), _Stub()]
    sums = [run_all(stubs[r], jobs, out, progress=False, share=Share(r, 2)) for r in (0, 1)]
    assert [len(s.done) for s in sums] == [3, 2] and [g.calls for g in stubs] == [3, 2]
    ids = {f.stem: json.loads(f.read_text())["image"]["image_id"] for f in out.glob("*.json")}
    assert ids == {f"im{i}": i for i in range(5)}
    again = run_all(_Stub(), jobs, out, progress=False, share=Share(0, 1))
    assert len(again.skipped) == 5 and not again.done
