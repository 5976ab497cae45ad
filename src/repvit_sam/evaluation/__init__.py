"""Zero-shot evaluation suite (``repvit-sam eval TASK``): dataset readers, metrics, an image
embedding cache, the tasks (coco-prompt, coco-ap, bsds-edge, duts-sod, mvtec-ad; video: davis, uvo) and report
writing. Each protocol is written down in docs/evaluation.md.

This package imports nothing heavy at import time; optional dependencies (the ``eval`` extra:
pyEdgeEval, pysodmetrics, ...) are imported where they are used.
"""

TASKS = ("coco-prompt", "coco-ap", "bsds-edge", "duts-sod", "mvtec-ad", "davis", "uvo")
