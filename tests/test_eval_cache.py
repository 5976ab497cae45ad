"""The image-embedding cache (evaluation/cache.py).
"""

from __future__ import annotations


import torch

from repvit_sam.evaluation.cache import CachedPredictor, EmbeddingCache, weights_hash

from eval_data import *  # noqa: F401,F403  (fixtures tiny / hooked and the dataset writers)


def test_cache_survives_a_corrupt_entry(tmp_path, tiny):
    cache = EmbeddingCache(tmp_path, "tiny", weights_hash(tiny))
    img = photo(30, 50, 0, [])
    p = CachedPredictor(tiny, cache)
    p.set_image(img)
    ref = p.features.clone()
    entry = next(cache.dir.glob("*.pt"))
    entry.write_bytes(b"not a torch file")
    q = CachedPredictor(tiny, cache)
    q.set_image(img)
    assert cache.misses == 2 and cache.hits == 0
    q.set_image(img)
    assert cache.hits == 1 and q.original_size == (30, 50) and q.input_size == p.input_size
    torch.testing.assert_close(q.features, ref)
    # a different image is a different key
    assert cache.image_key(img, 256) != cache.image_key(img[::-1].copy(), 256)
    assert cache.image_key(img, 256) != cache.image_key(img, 1024)


# ------------------------------------------------------------------------------ coco-ap
