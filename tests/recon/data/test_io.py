"""fastMRI file reading and writing."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from recon.data.io import FastMRIFormatError, center_crop, load_fastmri, parse_header, rss_target, write_fastmri
from tests.conftest import FASTMRI_REAL, needs_shared, write_bad_fastmri, write_h5


@needs_shared
def test_reads_the_real_fastmri_format_file():
    with load_fastmri(FASTMRI_REAL) as v:
        assert v.kspace.shape == (1, 8, 320, 256) and v.multicoil and v.n_coils == 8
        # header: enc_y = 256, center = 84, maximum = 167 -> padding 128 - 84 = 44 and 44 + 168 = 212
        assert (v.header.padding_left, v.header.padding_right) == (44, 212)
        assert v.header.recon_size[:2] == (320, 256)
        assert v.acceleration() == 1.0
        k = torch.from_numpy(v.kspace[0])
        target = v.target[0]
        # the stored target is the RSS of the coil images, cropped to the recon size
        assert np.allclose(rss_target(k, v.header).numpy(), target, rtol=1e-4, atol=1e-4 * target.max())
        assert v.attrs["acquisition"] == "AXT1"


def test_write_then_read_round_trip_with_padding(tmp_path):
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, 3, 40, 24, dtype=torch.complex64, generator=g)
    k[..., :4] = 0
    k[..., 20:] = 0
    path = write_fastmri(tmp_path / "a.h5", k, recon_size=(20, 20), acquired=(4, 20), attrs={"acquisition": "TEST"})
    with load_fastmri(path) as v:
        assert (v.header.padding_left, v.header.padding_right) == (4, 20)
        assert v.header.encoded_size == (40, 24, 1) and v.header.recon_size == (20, 20, 1)
        assert np.array_equal(v.kspace[1], k[1].numpy())
        assert v.target.shape == (2, 20, 20)
        assert v.attrs["acquisition"] == "TEST"
        assert v.attrs["max"] == pytest.approx(float(v.target[:].max()))
    with h5py.File(path) as f:  # the exact fastMRI layout: names and dtypes
        assert f["kspace"].dtype == np.complex64 and f["reconstruction_rss"].dtype == np.float32
        assert b"ISMRMRD" in f["ismrmrd_header"][()]


def test_header_padding_follows_fastmri_formula():
    xml = (b'<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding><encodedSpace><matrixSize><x>640</x>'
           b'<y>368</y><z>1</z></matrixSize></encodedSpace><reconSpace><matrixSize><x>320</x><y>320</y><z>1</z>'
           b'</matrixSize></reconSpace><encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>346'
           b'</maximum><center>173</center></kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>')
    h = parse_header(xml)
    assert (h.padding_left, h.padding_right) == (368 // 2 - 173, 368 // 2 - 173 + 347)


def test_center_crop_caps_at_input_size():
    x = torch.arange(6 * 5).reshape(6, 5)
    assert center_crop(x, (4, 8)).shape == (4, 5)
    assert center_crop(x, (2, 3)).tolist() == [[11, 12, 13], [16, 17, 18]]


@pytest.mark.parametrize("case,match", [
    ("missing", "no such file"),
    ("not_hdf5", "not an HDF5 file"),
    ("no_kspace", "no 'kspace' dataset"),
    ("rank", "has rank 2"),
    ("real", "expected complex"),
])
def test_bad_files_name_file_and_problem(tmp_path, case, match):
    p = write_bad_fastmri(tmp_path / f"{case}.h5", case)
    with pytest.raises(FastMRIFormatError, match=match) as err:
        load_fastmri(p)
    assert str(p) in str(err.value)


def test_nan_kspace_is_reported_on_read_and_never_written(tmp_path):
    k = np.ones((2, 2, 8, 8), np.complex64)
    k[1, 0, 3, 3] = np.nan
    p = write_h5(tmp_path / "nan.h5", kspace=k)
    with load_fastmri(p) as v:
        v.kspace[0]
        with pytest.raises(FastMRIFormatError, match="NaN or Inf"):
            v.kspace[1]
    out = tmp_path / "out.h5"
    with pytest.raises(FastMRIFormatError, match="NaN or Inf"):
        write_fastmri(out, k)
    assert not out.exists() and list(tmp_path.glob(".out.h5*")) == []
