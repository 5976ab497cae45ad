"""Training: one trainer (:mod:`.trainer`: DDP, bf16, gradient accumulation, atomic checkpoints,
exact resume, logs) and its objectives (:mod:`.objectives`: embedding MSE, prompts in the loop),
shared by ``repvit-sam distill train`` and ``repvit-sam finetune``.

Only light modules are imported here; torch is imported by the submodules.
"""
