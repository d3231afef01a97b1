"""Clip sampling against hand-computed indices (V-JEPA / V-JEPA 2 rules)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jepa_video.sampling import ClipSampler, frame_step_for, sample_clip_indices

# linspace(0, 64, 16) = k * 64/15, truncated, last one clipped from 64 to 63: spacing ~4.27
BASE_16x4 = [0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63]


def test_fixed_window_matches_hand_computed_linspace():
    (clip,) = sample_clip_indices(300, 16, 4, random_clip_sampling=False)
    assert clip.dtype == np.int64
    assert clip.tolist() == BASE_16x4


def test_random_window_is_the_same_linspace_shifted_and_stays_inside():
    ends = set()
    for seed in range(200):
        (clip,) = sample_clip_indices(300, 16, 4, generator=torch.Generator().manual_seed(seed))
        start = int(clip[0])
        assert clip.tolist() == [start + b for b in BASE_16x4]
        end = start + 64
        assert 64 <= end < 300  # the end is drawn from [clip_len, partition_len)
        ends.add(end)
    assert len(ends) > 100  # really random over the range
    assert min(ends) < 90 and max(ends) > 270


def test_same_generator_state_gives_the_same_clips():
    s = ClipSampler(16, frame_step=4, num_clips=2)
    a = s(1000, 30.0, torch.Generator().manual_seed(7))
    b = s(1000, 30.0, torch.Generator().manual_seed(7))
    c = s(1000, 30.0, torch.Generator().manual_seed(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    torch.manual_seed(3)
    d = s(1000, 30.0)
    torch.manual_seed(3)  # None uses the global generator, which StampedDataset seeds
    e = s(1000, 30.0)
    assert all(np.array_equal(x, y) for x, y in zip(d, e))


@pytest.mark.parametrize(("video_fps", "fps", "step"), [(30.0, 4, 7), (29.97, 4, 7), (25.0, 4, 6), (24.0, 4, 6),
                                                       (60.0, 4, 15), (30.0, 8, 3), (2.0, 4, 1)])
def test_fps_gives_ceil_video_fps_floordiv_fps(video_fps, fps, step):
    assert frame_step_for(video_fps, 16, fps=fps) == step  # (2 fps video: 0 in the official code, 1 here)


@pytest.mark.parametrize(("video_fps", "duration", "fpc", "step"), [(30.0, 2.0, 16, 3), (30.0, 4.27, 16, 8),
                                                                    (25.0, 10.0, 16, 15), (30.0, 0.1, 16, 1)])
def test_duration_gives_int_duration_times_fps_over_fpc(video_fps, duration, fpc, step):
    assert frame_step_for(video_fps, fpc, duration=duration) == step


def test_fps_sampling_end_to_end_uses_the_derived_step():
    (clip,) = ClipSampler(16, fps=4, random_clip_sampling=False)(900, 30.0)
    # step 7 -> window of 112 frames: linspace(0, 112, 16) = k * 112/15
    assert clip.tolist() == [min(int(k * 112 / 15), 111) for k in range(16)]
    assert 6 <= np.diff(clip).min() and np.diff(clip).max() <= 8


@pytest.mark.parametrize("kw", [{}, {"frame_step": 4, "fps": 4}, {"fps": 4, "duration": 2.0},
                                {"frame_step": 4, "duration": 2.0}])
def test_exactly_one_of_frame_step_fps_duration(kw):
    with pytest.raises(ValueError, match="exactly one"):
        ClipSampler(16, **kw)
    with pytest.raises(ValueError, match="exactly one"):
        frame_step_for(30.0, 16, **kw)


def test_fps_and_duration_need_the_video_frame_rate():
    with pytest.raises(ValueError, match="frame rate"):
        ClipSampler(16, fps=4)(100, 0.0)
    assert ClipSampler(16, frame_step=2)(100, 0.0)[0].shape == (16,)


def test_short_video_is_padded_with_its_last_frame():
    (clip,) = sample_clip_indices(20, 16, 4)  # 20 frames < window of 64
    # linspace(0, 20, 20 // 4 = 5) = 0, 5, 10, 15, 20 -> clipped to 19, then 11 copies of 19
    assert clip.tolist() == [0, 5, 10, 15, 19] + [19] * 11
    (tiny,) = sample_clip_indices(3, 16, 4)  # shorter than one step: every index is the last frame
    assert tiny.tolist() == [2] * 16
    (one,) = sample_clip_indices(1, 8, 4)
    assert one.tolist() == [0] * 8


def test_partition_exactly_one_window_long_takes_the_short_branch_with_the_same_indices():
    (clip,) = sample_clip_indices(64, 16, 4)  # not > clip_len: no randomness
    assert clip.tolist() == BASE_16x4


def test_num_clips_draws_one_clip_per_partition():
    clips = sample_clip_indices(300, 8, 2, num_clips=3, random_clip_sampling=False)
    base = [0, 2, 4, 6, 9, 11, 13, 15]  # linspace(0, 16, 8) = k * 16/7
    assert [c.tolist() for c in clips] == [[b + 100 * i for b in base] for i in range(3)]
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        for i, c in enumerate(sample_clip_indices(300, 8, 2, num_clips=3, generator=g)):
            assert 100 * i <= c.min() and c.max() < 100 * (i + 1)


def test_short_partitions_are_padded_each_within_itself():
    clips = sample_clip_indices(40, 8, 4, num_clips=2)  # partitions of 20 frames < window 32
    # linspace(0, 20, 5) clipped to 19, padded with 19
    assert [c.tolist() for c in clips] == [[0, 5, 10, 15, 19, 19, 19, 19], [20, 25, 30, 35, 39, 39, 39, 39]]


def test_allow_clip_overlap_spreads_overlapping_windows():
    clips = sample_clip_indices(40, 8, 4, num_clips=2, allow_clip_overlap=True)
    # window min(32, 40) - 1 = 31: linspace(0, 31, 7), pad with 31, clip to 30; clips 8 apart
    first = [0, 5, 10, 15, 20, 25, 30, 30]
    assert [c.tolist() for c in clips] == [first, [f + 8 for f in first]]


def test_bad_arguments():
    with pytest.raises(ValueError):
        sample_clip_indices(0, 16, 4)
    with pytest.raises(ValueError):
        sample_clip_indices(2, 16, 4, num_clips=3)
    with pytest.raises(ValueError):
        sample_clip_indices(100, 16, 0)
