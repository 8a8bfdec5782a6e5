"""The model card of a fine-tuned prior names every prior it started from."""
from __future__ import annotations

from benchmarks.priors import lineage_lines


def test_lineage_lines_list_each_start_and_the_totals():
    base = {"source": "a.pt", "sha256": "aa", "steps": 100, "wall_time_s": 600.0, "final_loss": 0.3,
            "data": "set A", "args": {"lr": "0.0003", "batch": "8", "patch": "64", "seed": "0"}}
    mid = {"source": "b.pt", "sha256": "bb", "steps": 50, "wall_time_s": 300.0, "final_loss": 0.25,
           "data": "set B", "args": {"lr": "0.0001", "batch": "4", "patch": "96", "seed": "1"}, "init": base}
    text = lineage_lines({"steps": 10, "wall_time_s": 60.0, "init": mid})
    assert text.index("`b.pt` (sha256 `bb`): 50 steps, lr 0.0001, batch 4 of 96x96") < text.index("`a.pt` (sha256 `aa`)")
    assert "**In all**: 160 steps, 16.0 min" in text
    assert lineage_lines({"steps": 10, "wall_time_s": 60.0}) == ""
