"""`jepa video check`, frame counts in the clean index, the loader's use of them, decoder
library messages, short-video padding and empty files in a folder (issue #14, #13 item 8)."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from jepa_core.cli import main as jepa
from jepa_core.data import CorruptSampleError, StampedDataset, StepBatchSampler, collate_stamped
from jepa_video import decoders
from jepa_video.check import check_file
from jepa_video.datasets import (
    VideoFolder,
    VideoIndex,
    read_frame_counts,
    read_index,
    write_array_index,
    write_index,
)
from jepa_video.decoders import MESSAGE_COUNTS, open_video
from jepa_video.sampling import ClipSampler
from jepa_video.testvideos import make_cases, read_code
from jepa_video.transforms import VideoEvalTransform
from torch.utils.data import DataLoader


@pytest.fixture(autouse=True)
def _fresh_counts(monkeypatch):
    monkeypatch.setattr(decoders, "_DECODABLE", {})
    monkeypatch.setattr(decoders, "_INDEXES", {})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    paths = make_cases(d / "walk", ["h264_mp4", "mpeg4_avi", "truncated_avi", "bad_last_frame_mp4"])
    (d / "walk" / "empty.mp4").write_bytes(b"")
    return d, paths


class _Codes:
    """A transform that keeps the frames' codes: which source frame each clip frame is."""

    def __call__(self, clip, generator=None):
        return torch.tensor([read_code(f) for f in clip])


def test_check_reports_counts_damage_and_writes_a_clean_index(files, capsys):
    d, paths = files
    out = d / "clean.npz"
    rc = jepa(["video", "check", str(d), "--out", str(out), "--json", str(d / "r.json")])
    text = capsys.readouterr().out
    assert rc == 1  # problems found
    assert "4 ok" not in text and "2 damaged, 1 corrupt" in text
    assert "empty.mp4  0 bytes" in text and "truncated_avi.avi  17 frames  the header lists 64" in text
    rows = read_index(out)
    counts = read_frame_counts(out)
    by_name = {p.rsplit("/", 1)[-1]: n for (p, _), n in zip(rows, counts, strict=True)}
    # the corrupt file is left out; damaged ones stay with the count that decodes
    assert by_name == {"h264_mp4.mp4": 48, "mpeg4_avi.avi": 48, "truncated_avi.avi": 17, "bad_last_frame_mp4.mp4": 47}
    assert {y for _, y in rows} == {0}  # the class from the sub-folder
    rc = jepa(["video", "check", str(d), "--out", str(out), "--drop-damaged", "--backends", "none"])
    assert rc == 1 and len(read_index(out)) == 2
    assert jepa(["video", "check", str(d / "nowhere")]) == 2


def test_check_of_a_clean_index_passes(files, tmp_path):
    _, paths = files
    write_index(tmp_path / "i.csv", [(str(paths["h264_mp4"]), 3), (str(paths["mpeg4_avi"]), 5)])
    assert jepa(["video", "check", str(tmp_path / "i.csv")]) == 0
    assert read_frame_counts(tmp_path / "i.checked.npz") == [48, 48]
    r = check_file(str(paths["mpeg4_avi"]), 5)
    assert r.fine and r.num_frames == r.listed_frames == 48 and not r.disagreement


def test_the_sampler_never_asks_past_the_indexed_count(files, tmp_path, monkeypatch):
    _, paths = files
    p = str(paths["bad_last_frame_mp4"])  # 48 packets, 47 decode
    write_array_index(tmp_path / "i.npz", [(p, 0)], [47])
    asked = []
    real = decoders.VideoDecoder.get_frames
    monkeypatch.setattr(decoders.VideoDecoder, "get_frames", lambda self, idx: asked.append(max(idx)) or real(self, idx))
    ds = VideoIndex(tmp_path / "i.npz", sampler=ClipSampler(8, frame_step=6), transform=_Codes(), backend="pyav")
    assert ds.frame_counts == [47]
    for seed in range(20):
        codes, _ = ds[0] if torch.manual_seed(seed) is not None else None
        assert codes.max() <= 46 and (codes >= 0).all()
    assert max(asked) <= 46 and not ds.recounted


def test_without_a_count_the_loader_redraws_inside_the_decodable_frames(files, caplog):
    _, paths = files
    p = str(paths["bad_last_frame_mp4"])
    # a clip of 8 every 6 frames out of 48 ends at the last frame in 1 draw of 1 at least
    ds = VideoIndex.__new__(VideoIndex)
    from jepa_video.datasets import ClipDataset

    ClipDataset.__init__(ds, [(p, 0)], sampler=ClipSampler(8, frame_step=6, random_clip_sampling=False),
                         transform=_Codes(), backend="pyav")
    with caplog.at_level(logging.WARNING, "jepa_video.datasets"):
        codes, _ = ds[0]  # the fixed window [0, 48) asks for frame 47, which does not decode
        codes2, _ = ds[0]
    assert codes.max() <= 46 and torch.equal(codes, codes2)
    assert ds.recounted == {p}
    assert sum("only the first 47 frames decode" in r.message for r in caplog.records) == 1  # once per file
    with open_video(p, "pyav") as v:
        assert v.num_frames == 47  # remembered for the file


def test_short_videos_are_padded_with_a_log_once_per_file_or_skipped(files, caplog):
    _, paths = files
    p = str(paths["h264_mp4"])  # 48 frames; a clip of 16 every 4 spans 64
    ds = ClipIndex = VideoIndex.__new__(VideoIndex)
    from jepa_video.datasets import ClipDataset

    ClipDataset.__init__(ClipIndex, [(p, 1)], sampler=ClipSampler(16, frame_step=4), transform=_Codes(),
                         backend="pyav")
    with caplog.at_level(logging.INFO, "jepa_video.datasets"):
        codes, _ = ds[0]
        ds[0]
    assert codes.tolist()[-1] == 47 and len(set(codes.tolist())) == 12  # 12 distinct, 4 repeats of the last
    assert ds.padded == {p: 4}
    msgs = [r.message for r in caplog.records if "too short" in r.message]
    assert len(msgs) == 1 and "4 repeated copies of the last frame" in msgs[0]
    assert ClipSampler(16, frame_step=4).padding(64) == 0 and ClipSampler(16, frame_step=4).padding(1) == 15
    skip = ClipDataset([(p, 1)], sampler=ClipSampler(16, frame_step=4, short_videos="skip"), transform=_Codes(),
                       backend="pyav")
    with pytest.raises(CorruptSampleError, match="too short for a clip of 16 frames every 4"):
        skip[0]
    with pytest.raises(ValueError, match="short_videos"):
        ClipSampler(16, frame_step=4, short_videos="drop")


def test_an_empty_file_in_a_folder_is_counted_as_skipped_by_the_loader(files, tmp_path):
    _, paths = files
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    shutil.copy(paths["h264_mp4"], root / "a" / "v.mp4")
    (root / "a" / "zero.mp4").write_bytes(b"")
    ds = VideoFolder(root, sampler=ClipSampler(4, frame_step=2), transform=VideoEvalTransform(16, 16),
                     backend="pyav")
    assert len(ds) == 2 and [p.rsplit("/", 1)[-1] for p in ds.too_small] == ["zero.mp4"]
    loader = DataLoader(StampedDataset(ds, seed=0), batch_sampler=StepBatchSampler(2, 2, 1, shuffle=False),
                        collate_fn=collate_stamped)
    ((clips, labels), _, n_bad), = list(loader)
    assert n_bad == 1 and clips.shape[0] == 1  # dropped and counted, like any corrupt sample


def test_decoder_library_messages_are_logged_and_counted_not_printed(files, capfd, caplog):
    _, paths = files
    p = str(paths["bad_last_frame_mp4"])
    before = MESSAGE_COUNTS[p]
    with caplog.at_level(logging.DEBUG, "jepa_video.ffmpeg"), open_video(p, "pyav") as v:
        with pytest.raises(CorruptSampleError):
            v.get_frames([47])
    assert MESSAGE_COUNTS[p] > before and v.messages >= 1
    assert any(r.name == "jepa_video.ffmpeg" and p in r.message for r in caplog.records)
    assert "@ 0x" not in capfd.readouterr().err  # nothing reached the terminal
    # text that is not a library message still reaches stderr
    with decoders.library_messages("x"):
        import os

        os.write(2, b"plain words\n")
    assert capfd.readouterr().err == "plain words\n"


def test_npz_index_counts_must_match_and_unknown_is_minus_one(tmp_path):
    write_array_index(tmp_path / "i.npz", [("a.mp4", 1), ("b.mp4", 2)], [10, None])
    assert read_frame_counts(tmp_path / "i.npz") == [10, None]
    assert read_index(tmp_path / "i.npz")[1] == (str(tmp_path / "b.mp4"), 2)
    with pytest.raises(ValueError):
        write_array_index(tmp_path / "j.npz", [("a.mp4", 1)], [1, 2])
    np.savez(tmp_path / "k.npz", paths=np.array(["a.mp4"]))
    assert read_frame_counts(tmp_path / "k.npz") is None


def test_vjepa_config_sets_the_short_video_policy():
    from jepa_video.vjepa import VJEPA_SPEC, _sampler

    for policy in ("pad", "skip"):
        cfg = VJEPA_SPEC.load_config("demo", overrides=[f"data.short_videos={policy}"])
        assert _sampler(cfg.data, True).short_videos == policy
