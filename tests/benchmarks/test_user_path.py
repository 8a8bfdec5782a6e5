"""benchmarks/user_path.py: the object-only PSNR of its second table."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.user_path import object_psnr
from tests.conftest import needs_shared


def test_object_psnr_ignores_the_background_and_uses_the_reference_max():
    ref = np.zeros((2, 8, 8))
    ref[:, 2:6, 2:6] = 4.0
    ref[:, 0, 0] = 0.3                      # below 10% of the max: background
    pred = ref + 0.4                          # error 0.1 of the max on every object pixel
    pred[:, 0:2, :] = 50.0                    # anything in the background
    assert object_psnr(ref, pred) == pytest.approx(20.0)


def test_scores_take_each_method_from_the_folder_that_ran_it(tmp_path):
    # zero-filled is scored in every output's JSON, but only a folder whose run wrote solvers/zero-filled
    # holds its image: a folder that ran l1-wavelet alone must not supply (or hide) zero-filled
    import json

    import h5py

    from benchmarks.user_path import scores

    ref = np.ones((1, 4, 4))
    for folder, methods in (("l1", {"l1-wavelet": 21.0}), ("main", {"dds": 30.0, "zero-filled": 20.0})):
        (tmp_path / folder).mkdir()
        with h5py.File(tmp_path / folder / "f.h5", "w") as h:
            h["reference"] = ref
            for m in methods:
                h[f"solvers/{m}/mean"] = ref * 0.9
        record = {m: {"psnr": v, "ssim": 0.5} for m, v in methods.items()}
        record.setdefault("zero-filled", {"psnr": 99.0, "ssim": 0.5})   # scored without a solvers/ group
        (tmp_path / folder / "f.json").write_text(json.dumps({"solvers": record}))
    sc = scores([tmp_path / "l1", tmp_path / "main"], [tmp_path / "f.h5"], ["dds", "l1-wavelet", "zero-filled"])
    assert sc["zero-filled"]["psnr"] == [20.0] and sc["l1-wavelet"]["psnr"] == [21.0] and sc["dds"]["psnr"] == [30.0]


def test_a_variant_column_is_its_folders_primary_method(tmp_path):
    # --variant "ccdf from unet"=FOLDER: the column holds that run's primary method, beside a plain ccdf column
    import json

    import h5py

    from benchmarks.user_path import scores

    ref = np.ones((1, 4, 4))
    for folder, value in (("main", 25.0), ("from_unet", 27.0)):
        (tmp_path / folder).mkdir()
        with h5py.File(tmp_path / folder / "f.h5", "w") as h:
            h["reference"] = ref
            h["solvers/ccdf/mean"] = ref * (0.9 if folder == "main" else 0.95)
        (tmp_path / folder / "f.json").write_text(json.dumps(
            {"primary": "ccdf", "solvers": {"ccdf": {"psnr": value, "ssim": 0.5}}}))
    sc = scores([tmp_path / "main"], [tmp_path / "f.h5"], ["ccdf"], {"ccdf from unet": tmp_path / "from_unet"})
    assert sc["ccdf"]["psnr"] == [25.0] and sc["ccdf from unet"]["psnr"] == [27.0]
    assert sc["ccdf from unet"]["object_psnr"][0] == pytest.approx(object_psnr(ref, ref * 0.95))


def test_interval_rows_read_coverage_width_and_the_calibrated_flag(tmp_path):
    import json

    from benchmarks.user_path import interval_rows

    for name, cov, calibrated in (("a", 0.9, True), ("b", 0.8, False)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"solvers": {
            "dds": {"psnr": 30.0, "coverage_95": cov, "mean_interval_width": 0.2, "interval": {"calibrated": calibrated}},
            "l1-wavelet": {"psnr": 28.0}}}))
    (tmp_path / "other").mkdir()                 # a second folder: its dds is not read again for file a
    (tmp_path / "other" / "a.json").write_text(json.dumps({"solvers": {
        "dds": {"coverage_95": 0.1, "mean_interval_width": 9.0},
        "ccdf": {"coverage_95": 0.95, "mean_interval_width": 0.3, "interval": {"calibrated": False}}}}))
    files = [tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "missing.h5"]
    rows = interval_rows([tmp_path, tmp_path / "other"], files, ["dds", "ccdf", "l1-wavelet"])
    assert rows == {"dds": {"coverage": [0.9, 0.8], "width": [0.2, 0.2], "calibrated": [True, False]},
                    "ccdf": {"coverage": [0.95], "width": [0.3], "calibrated": [False]}}


@needs_shared
def test_pkdata_files_hold_the_first_echo_at_its_own_size_with_12_coils(tmp_path):
    import h5py

    from benchmarks.user_path import PKDATA_COILS, make_pkdata_files
    from recon.data.brainweb import SHARED_DATA

    (path,) = make_pkdata_files(tmp_path, ("PKdata2",))
    with h5py.File(SHARED_DATA / "complex" / "PKdata2.h5") as f:
        image = f["images"][0]
    with h5py.File(path) as f:
        assert f["kspace"].shape == (1, PKDATA_COILS, 2 * image.shape[0], image.shape[1])
        target = f["reconstruction_rss"][0]
        assert f.attrs["patient_id"] == "PKdata2"
    # the target is the RSS of the coil images: |image| (p99-scaled) times the coils' RSS sensitivity plus noise;
    # its structure follows the source image
    rho = np.corrcoef(target.ravel(), np.abs(image).ravel())[0, 1]
    assert target.shape == image.shape and rho > 0.8
    assert make_pkdata_files(tmp_path, ("PKdata2",)) == [path]      # written once, reused
