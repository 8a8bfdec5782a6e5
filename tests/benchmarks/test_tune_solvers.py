"""The validation sweep's grid handling and its summary table."""
import json

import pytest

from benchmarks import tune_solvers as ts


def test_grid_override_replaces_one_axis_and_keeps_the_rest():
    over = ts.parse_grid(["cg_iters=20", "eta=0.85,1.0"])
    assert over == {"cg_iters": [20], "eta": [0.85, 1.0]}
    configs = list(ts.configurations("dds", over))
    assert configs == [{"eta": 0.85, "cg_iters": 20}, {"eta": 1.0, "cg_iters": 20}]
    assert len(list(ts.configurations("dds"))) == len(ts.SWEEPS["dds"]["eta"]) * len(ts.SWEEPS["dds"]["cg_iters"])
    with pytest.raises(SystemExit, match="NAME=V1,V2"):
        ts.parse_grid(["cg_iters"])


def test_report_averages_per_configuration_and_setting(tmp_path):
    recs = [
        {"modality": "mri", "method": "dds", "hparams": {"eta": 1.0}, "setting": "random-4x", "case": "a",
         "psnr": 30.0, "ssim": 0.8, "nfe": 50, "wall_s": 10.0},
        {"modality": "mri", "method": "dds", "hparams": {"eta": 1.0}, "setting": "random-4x", "case": "b",
         "psnr": 33.0, "ssim": 0.9, "nfe": 50, "wall_s": 20.0},
        {"modality": "mri", "method": "dds", "hparams": {"eta": 0.5}, "setting": "random-8x", "case": "a",
         "psnr": 20.0, "ssim": 0.5, "nfe": 50, "wall_s": 12.0},
    ]
    f = tmp_path / "s.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    table = ts.report([str(f)], append=False)
    rows = {line.split("|")[3].strip(): line for line in table.splitlines()[2:]}
    assert "31.50 / 0.850 (2)" in rows["eta=1.0"] and rows["eta=1.0"].rstrip().endswith("| 15 |")
    assert "20.00 / 0.500 (1)" in rows["eta=0.5"] and "–" in rows["eta=0.5"]
    assert table.splitlines()[2].split("|")[3].strip() == "eta=0.5"        # numeric order of the values
