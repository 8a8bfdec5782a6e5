"""benchmarks/typicality.py: the threshold written into a prior's table from cached validation scores."""
from __future__ import annotations

import json

import numpy as np
import pytest

from recon import intervals as iv


def test_fit_writes_the_conformal_limit_of_the_per_image_medians_into_the_band_entry(tmp_path, monkeypatch):
    from benchmarks import typicality

    table = iv.CalibrationTable("p", [iv.CalibrationEntry("dds", "mri", "R<=5", 2.5, 0.05, "crc", 40),
                                      iv.CalibrationEntry("dds", "mri", "R>5", 3.0, 0.05, "crc", 40)])
    path = tmp_path / "p.calibration.json"
    table.save(path)
    monkeypatch.setattr(iv, "table_path", lambda name: path)
    folder = tmp_path / "work" / "random-4"
    folder.mkdir(parents=True)
    medians = np.linspace(0.30, 0.40, 20)
    for i, m in enumerate(medians):                           # two samples around each image's median
        (folder / f"s{i:02d}.json").write_text(json.dumps({"score_norm": [m - 0.01, m + 0.01]}))
    rec = typicality.fit(tmp_path / "work", "random-4", "dds", 0.05, "p", "validation")
    assert rec["max"] == pytest.approx(0.40) and rec["n_images"] == 20 and rec["range"] == [0.3, 0.4]
    saved = iv.CalibrationTable.load(path)
    assert saved.lookup("dds", "mri", 4.0).typicality["max"] == pytest.approx(0.40)
    assert saved.lookup("dds", "mri", 8.0).typicality is None
    (folder / "s00.json").unlink()                            # 19 images are still enough for 0.05 ...
    assert typicality.fit(tmp_path / "work", "random-4", "dds", 0.05, "p", "v")["n_images"] == 19
    with pytest.raises(SystemExit, match="too few"):         # ... 19 are not for 0.01
        typicality.fit(tmp_path / "work", "random-4", "dds", 0.01, "p", "v")


def test_fit_with_a_mask_kind_adds_that_masks_threshold_beside_the_entrys_own(tmp_path, monkeypatch):
    from benchmarks import typicality

    path = tmp_path / "p.calibration.json"
    iv.CalibrationTable("p", [iv.CalibrationEntry("dds", "mri", "R<=5", 2.5, 0.05, "crc", 40)]).save(path)
    monkeypatch.setattr(iv, "table_path", lambda name: path)
    for setting, top in (("random-4", 0.40), ("equispaced-4", 0.50)):
        folder = tmp_path / "work" / setting
        folder.mkdir(parents=True)
        for i, m in enumerate(np.linspace(top - 0.1, top, 20)):
            (folder / f"s{i:02d}.json").write_text(json.dumps({"score_norm": [m]}))
    with pytest.raises(SystemExit, match="own threshold first"):
        typicality.fit(tmp_path / "work", "equispaced-4", "dds", 0.05, "p", "v", mask_kind="equispaced")
    typicality.fit(tmp_path / "work", "random-4", "dds", 0.05, "p", "v")
    typicality.fit(tmp_path / "work", "equispaced-4", "dds", 0.05, "p", "v", mask_kind="equispaced")
    typicality.fit(tmp_path / "work", "random-4", "dds", 0.05, "p", "v")     # a refit keeps the mask's threshold
    typical = iv.CalibrationTable.load(path).lookup("dds", "mri", 4.0).typicality
    assert typical["max"] == pytest.approx(0.40) and typical["masks"]["equispaced"]["max"] == pytest.approx(0.50)
