"""Exporting models for other runtimes: ONNX (:mod:`.onnx`) and Core ML (:mod:`.coreml`).

Importing this package is light; each exporter imports torch and its converter when used.
"""
