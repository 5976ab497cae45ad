"""Distillation: train a RepViT-SAM image encoder from a SAM teacher's image embeddings.

Three steps, each a ``repvit-sam distill`` subcommand (see docs/distill.md):

* ``embed``  teacher image embeddings -> fp16 shards + index with per-shard SHA-256
  (:mod:`.embed`, :mod:`.shards`), parallel across ranks under ``torchrun``;
* ``train``  the student encoder, MSE to the stored embeddings, DDP, exact resume (:mod:`.train`);
* ``export`` student encoder + teacher prompt encoder / mask decoder -> an official-format
  checkpoint (:mod:`.export`).

Only light modules are imported here; torch is imported by the submodules.
"""
