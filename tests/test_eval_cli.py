"""`repvit-sam eval` command line (evaluation/cli.py): usage errors and missing extras.
"""

from __future__ import annotations


import pytest


from eval_data import *  # noqa: F401,F403  (fixtures tiny / hooked and the dataset writers)


def test_usage_errors(tmp_path, hooked, capsys):
    make_coco(tmp_path / "c")
    for argv, msg in (
        (["eval"], "eval: name a TASK"),
        (["eval", "coco-prompt", "--data", tmp_path / "c", "--prompts", "box,scribble"], "--prompts takes box and/or point"),
        (["eval", "coco-prompt", "--data", tmp_path / "c", "--prompts", "box", "--refine", "2"], "--refine needs point prompts"),
        (["eval", "coco-prompt", "--data", tmp_path / "c", "--limit", "0"], "expected a positive integer"),
        (["eval", "bsds-edge", "--data", tmp_path / "c", "--nms", "1.5"], "expected a number in (0, 1]"),
        (["eval", "frobnicate", "--data", tmp_path / "c"], "invalid choice"),
    ):
        code, _, err = run(argv, capsys)
        assert code == 2 and msg in err, (argv, err)


def test_missing_optional_dependency_names_the_extra():
    from repvit_sam.evaluation.metrics import require

    with pytest.raises(ImportError, match=r"surely_not_a_module_xyz is not installed \(this evaluation needs it\): pip install 'repvit-sam\[eval\]'"):
        require("surely_not_a_module_xyz")
