"""repvit_sam.serve.cache.LRUCache: bounded LRU, one computation per key under concurrency."""

from __future__ import annotations

import threading

import pytest

from repvit_sam.serve.cache import LRUCache


def test_evicts_least_recently_used():
    c: LRUCache[str, int] = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a becomes the most recent
    c.put("c", 3)
    assert c.keys() == ["a", "c"] and "b" not in c and len(c) == 2
    assert c.stats().evictions == 1


def test_get_or_compute_stores_and_counts():
    c: LRUCache[str, int] = LRUCache(3)
    calls = []
    assert c.get_or_compute("k", lambda: calls.append(1) or 7) == (7, True)
    assert c.get_or_compute("k", lambda: calls.append(1) or 8) == (7, False)
    assert len(calls) == 1
    s = c.stats()
    assert (s.hits, s.misses, s.entries, s.max_entries) == (1, 1, 1, 3)
    assert c.pop("k") == 7 and c.pop("k") is None and c.get("k") is None


def test_failed_compute_stores_nothing_and_can_retry():
    c: LRUCache[str, int] = LRUCache(2)

    def boom() -> int:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="no"):
        c.get_or_compute("k", boom)
    assert "k" not in c and c._key_locks == {}
    assert c.get_or_compute("k", lambda: 5) == (5, True)


def test_same_key_is_computed_once_by_concurrent_callers():
    c: LRUCache[str, int] = LRUCache(4)
    started = threading.Event()
    release = threading.Event()
    calls = []

    def slow() -> int:
        calls.append(threading.get_ident())
        started.set()
        assert release.wait(10)
        return 42

    results = []
    threads = [threading.Thread(target=lambda: results.append(c.get_or_compute("img", slow))) for _ in range(6)]
    for t in threads:
        t.start()
    assert started.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert sorted(results) == [(42, False)] * 5 + [(42, True)]
    assert c._key_locks == {}  # per-key locks are dropped once unused


def test_different_keys_compute_in_parallel():
    c: LRUCache[str, str] = LRUCache(4)
    both_inside = threading.Barrier(2, timeout=10)

    def compute(name: str):
        def f() -> str:
            both_inside.wait()  # raises BrokenBarrierError if the other key's computation is blocked
            return name

        return f

    out = {}
    threads = [threading.Thread(target=lambda k=k: out.update({k: c.get_or_compute(k, compute(k))[0]})) for k in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert out == {"a": "a", "b": "b"}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_size(bad):
    with pytest.raises(ValueError, match="max_entries must be a positive integer"):
        LRUCache(bad)
