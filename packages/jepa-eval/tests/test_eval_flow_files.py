"""Bad input to the flow file readers not covered by test_eval_flow.py: a truncated KITTI PNG,
PFM files with a wrong header, one channel or a cut body, and a .flo file through
`read_flow`; every error is a FlowFileError (a ValueError) naming the file."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from jepa_eval.flow import (
    FlowFileError,
    read_flow,
    read_kitti_flow,
    read_pfm,
    write_flo,
    write_kitti_flow,
)


def test_truncated_kitti_png_names_the_file(tmp_path):
    path = tmp_path / "000000_10.png"
    write_kitti_flow(path, torch.ones(2, 6, 8))
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(FlowFileError, match=r"000000_10\.png: truncated PNG"):
        read_kitti_flow(path)
    path.write_bytes(good[:-12])  # the IEND chunk cut off
    with pytest.raises(FlowFileError, match=r"000000_10\.png: truncated PNG"):
        read_flow(path)


def test_pfm_bad_header_one_channel_and_truncated(tmp_path):
    path = tmp_path / "flow.pfm"
    path.write_bytes(b"P6\n3 2\n255\n" + bytes(18))  # a PPM image, not a PFM
    with pytest.raises(FlowFileError, match=r"flow\.pfm: not a PFM file"):
        read_pfm(path)
    path.write_bytes(b"Pf\n3 2\n-1.0\n" + np.zeros(6, "<f4").tobytes())
    with pytest.raises(FlowFileError, match=r"flow\.pfm: a single-channel PFM"):
        read_pfm(path)
    path.write_bytes(b"PF\n3 2\n-1.0\n" + np.zeros(3 * 2 * 3 - 1, "<f4").tobytes())
    with pytest.raises(FlowFileError, match=r"flow\.pfm: truncated: 3x2x3 float32 needs 72 bytes, got 68"):
        read_flow(path)
    assert issubclass(FlowFileError, ValueError)


def test_flo_errors_through_read_flow_name_the_file(tmp_path):
    path = tmp_path / "frame_0001.flo"
    write_flo(path, torch.zeros(2, 3, 5))
    good = path.read_bytes()
    path.write_bytes(struct.pack("<f", 2.0) + good[4:])
    with pytest.raises(FlowFileError, match=r"frame_0001\.flo: not a \.flo file: magic number"):
        read_flow(path)
    path.write_bytes(good[:20])
    with pytest.raises(FlowFileError, match=r"frame_0001\.flo: truncated"):
        read_flow(path)
