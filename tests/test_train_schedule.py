"""The trainer's schedule, data order and run length (repvit_sam.train.schedule / trainer)."""

from __future__ import annotations

import pytest

from repvit_sam.train.schedule import MicroBatchSampler, Recipe, WarmupCosine
from repvit_sam.train.state import TrainingStateError
from repvit_sam.train.trainer import make_plan, micro_seed


def test_schedule_and_data_order():
    f = WarmupCosine(total=100, warmup=10, min_ratio=0.01)
    assert f(0) < 0.1 and f(9) < 1.0 and f(10) == pytest.approx(1.0) and f(99) == pytest.approx(0.01, abs=2e-3)
    assert all(f(i) >= f(i + 1) for i in range(10, 99))
    one = list(MicroBatchSampler(10, 4, 0, 1, seed=3, start=0, stop=6))
    two = [list(MicroBatchSampler(10, 4, r, 2, seed=3, start=0, stop=6)) for r in (0, 1)]
    assert [a + b for a, b in zip(*two)] == one  # ranks split each global micro-batch
    epoch0 = sum(one[:2], [])
    assert len(set(epoch0)) == 8  # no image twice within an epoch
    assert list(MicroBatchSampler(10, 4, 0, 1, seed=3, start=4, stop=6)) == one[4:]  # resume position


def test_plan_arithmetic_and_errors():
    r = Recipe("x", epochs=2.0, batch_size=8, grad_accum=2)
    plan = make_plan(r, 2, 100, None, None)
    assert (plan.global_micro, plan.per_epoch_micro, plan.total_steps) == (4, 25, 25)  # 2 epochs x 25 micro / 2 accum
    assert make_plan(r, 2, 100, 7, None).total_steps == 7
    assert make_plan(r, 2, 100, None, None, resume_total=40).total_steps == 40
    with pytest.raises(ValueError, match="not divisible by grad_accum 2 x 3 ranks"):
        make_plan(r, 3, 100, None, None)
    with pytest.raises(TrainingStateError, match="fewer than one micro-batch"):
        make_plan(r, 1, 3, None, None)
    assert Recipe.from_dict(r.to_dict()) == r


def test_micro_batch_seeds_differ_by_rank_and_step():
    seeds = {micro_seed(0, m, k) for m in range(50) for k in range(4)}
    assert len(seeds) == 200
