"""The noisy validation sweep's records: one report column per (setting, noise level)."""
import json

from benchmarks import tune_solvers as ts


def test_report_splits_columns_by_noise_level(tmp_path):
    base = {"modality": "mri", "method": "dds", "hparams": {"gamma_scale": 0.25}, "setting": "random-8x",
            "nfe": 50, "wall_s": 10.0, "ssim": 0.5}
    recs = [{**base, "case": "a", "noise_std": 0.002, "psnr": 24.0},
            {**base, "case": "b", "noise_std": 0.002, "psnr": 22.0},
            {**base, "case": "a", "noise_std": 0.007, "psnr": 20.0}]
    f = tmp_path / "n.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    table = ts.report([str(f)], append=False)
    header = [c.strip() for c in table.splitlines()[0].split("|")]
    assert header[5:7] == ["random-8x noise 0.002", "random-8x noise 0.007"]
    row = table.splitlines()[2]
    assert "23.00 / 0.500 (2)" in row and "20.00 / 0.500 (1)" in row
    # a resumed sweep tells the same run at two noise levels apart
    assert ts._key({**recs[0], "nfe_request": 50}) != ts._key({**recs[2], "nfe_request": 50})


def test_report_and_resume_tell_sample_counts_apart(tmp_path):
    """A run with --samples 8 is its own row and its own resume key; records made before the count was recorded
    were made with the default 4; classical methods have no sample count."""
    base = {"modality": "mri", "method": "dds", "hparams": {}, "setting": "random-8x", "case": "a",
            "nfe": 50, "wall_s": 10.0, "ssim": 0.5, "noise_std": 0.007, "nfe_request": None}
    recs = [{**base, "psnr": 23.0}, {**base, "psnr": 24.0, "n_samples": 8}]
    f = tmp_path / "s.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    rows = ts.report([str(f)], append=False).splitlines()[2:]
    assert len(rows) == 2
    assert "| dds |  | 50 | 23.00 / 0.500 (1)" in rows[0] and "| dds | 8 samples | 50 | 24.00 / 0.500 (1)" in rows[1]
    assert ts._key(recs[0]) == ts._key({**recs[0], "n_samples": 4}) != ts._key(recs[1])
    l1 = {**base, "method": "l1-wavelet"}
    assert ts._key(l1) == ts._key({**l1, "n_samples": 8})
