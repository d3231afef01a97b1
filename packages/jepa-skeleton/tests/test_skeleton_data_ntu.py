"""The NTU ``.skeleton`` parser, sample names, benchmark splits and the converter."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from jepa_skeleton.graph import COCO17, NTU25, get_graph
from jepa_skeleton.ntu import (
    SkeletonFormatError,
    convert_ntu,
    main,
    ntu_split,
    parse_ntu_name,
    read_skeleton,
)

FIXTURE = Path(__file__).parent / "fixtures" / "S001C002P003R002A013.skeleton"
# The fixture: 6 frames, frames 2 and 5 without a body. Body A (static, x = j / 100, y = 0.5,
# z = 3) is in frames 1, 3, 4; body B (x = 1 + j / 10, y = frame's B-count, z = 2) in frames
# 3, 4, 6; body C (all joints at (0, 0.25, 4), no motion) in frame 4 only.
J = np.arange(25)
A = np.stack([J / 100, np.full(25, 0.5), np.full(25, 3.0)], -1)


def B(t):
    return np.stack([1 + J / 10, np.full(25, float(t)), np.full(25, 2.0)], -1)


def test_graphs():
    assert NTU25.num_joints == 25 and len(NTU25.edges) == 24 and NTU25.center == 1
    assert NTU25.joint_names[NTU25.center] == "spine_mid"
    parents = NTU25.parents()  # a tree rooted at the spine shoulder (joint 21)
    assert parents.count(-1) == 1 and parents[20] == -1
    assert COCO17.num_joints == 17 and len(COCO17.edges) == 19
    assert get_graph("NTU25") is NTU25 and get_graph(COCO17) is COCO17
    with pytest.raises(ValueError, match="coco17.*ntu25"):
        get_graph("kinetics")
    with pytest.raises(ValueError, match="25 joints, got 17"):
        NTU25.validate(np.zeros((3, 10, 17, 2)))
    NTU25.validate(np.zeros((3, 10, 25, 2)))


def test_read_skeleton_two_bodies_and_missing_frames():
    x = read_skeleton(FIXTURE)
    assert x.dtype == np.float32 and x.shape == (4, 2, 25, 3)  # frames 2 and 5 dropped
    # B moves more than A: slot 0 is B, slot 1 is A; C (no motion) is left out
    np.testing.assert_array_equal(x[0, 0], 0)  # B absent from frame 1
    np.testing.assert_allclose(x[0, 1], A, rtol=0, atol=1e-6)
    np.testing.assert_allclose(x[1, 0], B(1), atol=1e-6)
    np.testing.assert_allclose(x[1, 1], A, atol=1e-6)
    np.testing.assert_allclose(x[2, 0], B(2), atol=1e-6)  # body order swapped in the file
    np.testing.assert_allclose(x[2, 1], A, atol=1e-6)
    np.testing.assert_allclose(x[3, 0], B(3), atol=1e-6)
    np.testing.assert_array_equal(x[3, 1], 0)  # A absent from frame 6
    assert x[2, 0, 24, 0] == np.float32(3.4) and x[0, 1, 7, 0] == np.float32(0.07)
    # one body kept: the most moving one
    x1 = read_skeleton(FIXTURE, max_bodies=1)
    assert x1.shape == (4, 1, 25, 3)
    np.testing.assert_array_equal(x1[:, 0], x[:, 0])
    # three slots: C (present in the third valid frame only) comes last
    x3 = read_skeleton(FIXTURE, max_bodies=3)
    np.testing.assert_allclose(x3[2, 2], np.tile([0, 0.25, 4], (25, 1)), atol=1e-6)
    assert not x3[[0, 1, 3], 2].any()


def _broken(tmp_path, text: str, name: str = "S001C001P001R001A001.skeleton") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("case, line, msg", [
    ("truncated", 100, "truncated"),
    ("joint_count", 31, "expected 25 joints, got 24"),  # second frame's count line
    ("non_numeric", 8, "non-numeric"),
    ("nan", 9, "non-finite value in a joint line: '0.04 nan 3'"),  # float() would read it
    ("inf", 10, "non-finite value in a joint line: '0.05 0.5 -inf'"),
    ("bad_frames", 1, "number of frames"),
    ("fields", 7, "12 fields"),
    ("extra", 197, "after the last"),
])
def test_malformed_files(tmp_path, case, line, msg):
    lines = FIXTURE.read_text().splitlines()
    if case == "truncated":
        lines = lines[:99]
    elif case == "joint_count":  # frame 3's first body says 24 joints (file line 33)
        assert lines[32] == "25"
        lines[32] = "24"
        line = 33
    elif case == "non_numeric":
        lines[7] = lines[7].replace("0.03", "abc", 1)
    elif case == "nan":
        lines[8] = lines[8].replace("0.04 0.5", "0.04 nan", 1)
    elif case == "inf":
        lines[9] = lines[9].replace("0.05 0.5 3", "0.05 0.5 -inf", 1)
    elif case == "bad_frames":
        lines[0] = "six"
    elif case == "fields":
        lines[6] = " ".join(lines[6].split()[:11])
    elif case == "extra":
        lines.append("1")
    p = _broken(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(SkeletonFormatError, match=msg) as err:
        read_skeleton(p)
    assert f"{p.name}, line {line}:" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_names_and_splits():
    info = parse_ntu_name("/data/S001C001P001R001A001.skeleton")
    assert info == {"setup": 1, "camera": 1, "performer": 1, "replication": 1, "action": 1,
                    "label": 0}
    assert parse_ntu_name("S017C003P020R002A060")["label"] == 59
    n = "S001C001P001R001A001"
    assert ntu_split(n, "xsub60") == "train"  # P001 is a training subject
    assert ntu_split(n, "xview60") == "test"  # camera 1 is the test view
    assert ntu_split("S001C002P003R001A001", "xsub60") == "test"
    assert ntu_split("S001C002P003R001A001", "xview60") == "train"
    assert ntu_split("S001C003P038R001A001", "xsub60") == "train"
    assert ntu_split("S001C003P040R001A001", "xsub60") == "test"
    assert ntu_split("S018C001P045R001A061", "xsub120") == "train"
    assert ntu_split("S018C001P044R001A061", "xsub120") == "test"
    assert ntu_split("S018C001P044R001A061", "xset120") == "train"  # even setup
    assert ntu_split("S017C001P001R001A061", "xset120") == "test"
    with pytest.raises(ValueError, match="xset120"):
        ntu_split(n, "xsub")
    with pytest.raises(ValueError, match="SsssCccc"):
        parse_ntu_name("video_001.skeleton")


def test_convert_ntu_skips_and_counts_bad_files(tmp_path):
    src = tmp_path / "skeletons"
    src.mkdir()
    shutil.copy(FIXTURE, src / "S001C002P001R001A013.skeleton")  # xsub60 train
    shutil.copy(FIXTURE, src / "S001C001P003R001A002.skeleton")  # xsub60 test
    text = FIXTURE.read_text().splitlines()
    (src / "S001C001P002R001A005.skeleton").write_text("\n".join(text[:50]))  # truncated
    (src / "S001C001P004R001A005.skeleton").write_text("3\n0\n0\n0\n")  # no body at all: no valid frame
    (src / "S001C001P005R001A005.skeleton").write_text(  # a NaN joint
        "\n".join(t.replace("0.03 0.5", "0.03 nan", 1) for t in text) + "\n")
    shutil.copy(FIXTURE, src / "S018C001P001R001A100.skeleton")  # NTU-120 only: excluded
    shutil.copy(FIXTURE, src / "S001C001P001R001A007.skeleton")  # ignored by name
    out = tmp_path / "ntu.npz"
    summary = convert_ntu(src, out, "xsub60", num_frames=6, ignore=["S001C001P001R001A007"])
    assert summary["train"] == 1 and summary["test"] == 1
    assert summary["skipped"] == 3 and summary["excluded"] == 1 and summary["ignored"] == 1
    assert sorted(summary["skipped_files"]) == ["S001C001P002R001A005.skeleton",
                                                "S001C001P004R001A005.skeleton",
                                                "S001C001P005R001A005.skeleton"]
    assert "line 51" in summary["errors"]["S001C001P002R001A005.skeleton"]
    assert "no frame has a body" in summary["errors"]["S001C001P004R001A005.skeleton"]
    assert "line 8: non-finite" in summary["errors"]["S001C001P005R001A005.skeleton"]
    z = np.load(out)
    assert z["x_train"].shape == (1, 3, 6, 25, 2) and z["x_train"].dtype == np.float32
    np.testing.assert_array_equal(z["y_train"], [12])
    np.testing.assert_array_equal(z["y_test"], [1])
    assert list(z["names_test"]) == ["S001C001P003R001A002"]
    ref = read_skeleton(FIXTURE).transpose(3, 0, 2, 1)  # (C, T, V, M)
    np.testing.assert_array_equal(z["x_train"][0, :, :4], ref)
    np.testing.assert_array_equal(z["x_train"][0, :, 4:], 0)  # zero padding
    # a shorter window cuts and reports
    summary = convert_ntu(src, tmp_path / "short.npz", "xsub60", num_frames=3)
    assert len(summary["truncated"]) == 3  # A007 is not ignored this time
    # NTU-120 takes the A100 sample too
    summary = convert_ntu(src, tmp_path / "ntu120.npz", "xset120", num_frames=6)
    assert summary["train"] + summary["test"] == 4 and summary["excluded"] == 0


def test_cli_with_centring(tmp_path, capsys):
    src = tmp_path / "skeletons"
    src.mkdir()
    shutil.copy(FIXTURE, src / "S002C003P001R001A013.skeleton")
    (tmp_path / "missing.txt").write_text("S002C003P009R001A013\n")
    summary = main([str(src), str(tmp_path / "c.npz"), "--benchmark", "xview60",
                    "--num-frames", "8", "--center", "--ignore", str(tmp_path / "missing.txt")])
    assert summary["train"] == 1 and '"train": 1' in capsys.readouterr().out
    x = np.load(tmp_path / "c.npz")["x_train"][0]  # (3, 8, 25, 2)
    raw = read_skeleton(FIXTURE).transpose(3, 0, 2, 1)
    origin = raw[:, 1, 1, 0]  # body 0 (B) first appears in valid frame 1; joint 2 (index 1)
    np.testing.assert_allclose(x[:, 1, 1, 0], 0, atol=1e-6)
    np.testing.assert_allclose(x[:, 1:4, :, 0], raw[:, 1:4, :, 0] - origin[:, None, None],
                               atol=1e-6)
    np.testing.assert_allclose(x[:, :3, :, 1], raw[:, :3, :, 1] - origin[:, None, None],
                               atol=1e-6)
    assert not x[:, 0, :, 0].any() and not x[:, 3, :, 1].any() and not x[:, 4:].any()
