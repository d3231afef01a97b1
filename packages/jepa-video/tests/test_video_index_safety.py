"""Index files a user passes never run code: a pickled ``.npy`` index is refused unless opted in,
and even then only path strings are unpickled (issue #13, item 3)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from jepa_core.cli import main as jepa_main
from jepa_video.datasets import (
    IndexFormatError,
    VideoIndex,
    convert_pickled_index,
    read_array_index,
    read_index,
)
from jepa_video.sampling import ClipSampler
from jepa_video.transforms import VideoTrainTransform

SMALL = dict(sampler=ClipSampler(8, frame_step=2), transform=VideoTrainTransform(16))
TINY = [
    "data.frames_per_clip=4", "data.crop_size=32", "data.batch_size=4", "data.num_workers=0",
    "data.pin_memory=false", "model.encoder=custom", "model.embed_dim=24", "model.depth=2", "model.num_heads=2",
    "model.patch_size=8", "model.pred_depth=1", "model.pred_emb_dim=12", "model.pred_num_heads=2",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false", "optim.max_steps=1",
]


class _Payload:
    """Unpickling this creates ``marker``: it would prove that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_npy(tmp_path, real_video=None):
    marker = tmp_path / "PWNED"
    entries = [_Payload(marker)] + ([str(real_video)] if real_video else [])
    path = tmp_path / "evil.npy"
    np.save(path, np.array(entries, dtype=object), allow_pickle=True)
    return path, marker


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch):
    monkeypatch.delenv("JEPA_ALLOW_PICKLE_INDEX", raising=False)


@pytest.mark.fault
@pytest.mark.parametrize("opt_in", [None, False, True, "env"])
def test_pickle_payload_in_npy_index_never_runs(tmp_path, monkeypatch, h264_video, opt_in):
    path, marker = _evil_npy(tmp_path, h264_video)
    if opt_in == "env":
        monkeypatch.setenv("JEPA_ALLOW_PICKLE_INDEX", "1")
        opt_in = None
    with pytest.raises(IndexFormatError) as err:
        VideoIndex(path, allow_pickle=opt_in, **SMALL)
    msg = str(err.value)
    if opt_in or os.environ.get("JEPA_ALLOW_PICKLE_INDEX"):
        assert "posix.system" in msg or "os.system" in msg or "nt.system" in msg
        assert "not allowed" in msg
    else:
        assert "pickled" in msg and "refused" in msg
        assert "convert_pickled_index" in msg and "JEPA_ALLOW_PICKLE_INDEX=1" in msg
    with pytest.raises(IndexFormatError):
        convert_pickled_index(path)  # the converter is just as strict
    assert not marker.exists()


@pytest.mark.fault
def test_pickle_payload_in_npz_index_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npz"
    np.savez(path, paths=np.array([_Payload(marker)], dtype=object), labels=np.array([0]))
    with pytest.raises(IndexFormatError, match="pickled"):
        read_index(path, allow_pickle=True)
    assert not marker.exists()


@pytest.mark.fault
def test_pretrain_cli_refuses_pickled_index(tmp_path, capsys, h264_video):
    path, marker = _evil_npy(tmp_path, h264_video)
    code = jepa_main(["pretrain", "vjepa", *TINY, "data.dataset=index", "data.label=raw", f"data.index=[{path}]",
                      "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr()
    assert code != 0
    assert "pickled" in out.err + out.out and "JEPA_ALLOW_PICKLE_INDEX" in out.err + out.out
    assert not marker.exists()


def test_old_pickled_index_opt_in_and_converter(tmp_path, h264_video, monkeypatch):
    old = tmp_path / "old.npy"
    np.save(old, np.array([str(h264_video), "rel/clip.mp4"], dtype=object), allow_pickle=True)
    with pytest.raises(IndexFormatError, match="refused"):
        read_index(old)
    want = [(str(h264_video), 0), (str(tmp_path / "rel/clip.mp4"), 0)]
    assert read_index(old, allow_pickle=True) == want
    monkeypatch.setenv("JEPA_ALLOW_PICKLE_INDEX", "1")
    assert read_index(old) == want
    monkeypatch.delenv("JEPA_ALLOW_PICKLE_INDEX")
    safe = convert_pickled_index(old)
    assert safe == tmp_path / "old.safe.npy"
    assert np.load(safe, allow_pickle=False).dtype.kind == "U"
    assert read_index(safe) == want
    clip, label = VideoIndex(safe, **SMALL)[0]
    assert clip.shape == (3, 8, 16, 16) and label == 0


def test_safe_array_index_formats(tmp_path):
    np.save(tmp_path / "u.npy", np.array(["a.mp4", "/abs/b.mp4"]))
    assert read_index(tmp_path / "u.npy") == [(str(tmp_path / "a.mp4"), 0), ("/abs/b.mp4", 0)]
    rows = np.array([("a.mp4", 3), ("b.mp4", 7)], dtype=[("path", "U16"), ("label", "i8")])
    np.save(tmp_path / "s.npy", rows)
    assert read_array_index(tmp_path / "s.npy") == [("a.mp4", 3), ("b.mp4", 7)]
    np.savez(tmp_path / "z.npz", paths=np.array(["a.mp4", "b.mp4"]), labels=np.array([1, 2]))
    assert read_array_index(tmp_path / "z.npz") == [("a.mp4", 1), ("b.mp4", 2)]
    np.savez(tmp_path / "bad.npz", files=np.array(["a.mp4"]))
    with pytest.raises(IndexFormatError, match="paths"):
        read_array_index(tmp_path / "bad.npz")
    np.save(tmp_path / "f.npy", np.zeros(3))
    with pytest.raises(IndexFormatError, match="string array"):
        read_array_index(tmp_path / "f.npy")
