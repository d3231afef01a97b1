"""Transforms: one crop and one flip per clip, shapes, normalisation, crop statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from jepa_video.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoEvalTransform,
    VideoTrainTransform,
    random_resized_crop_params,
)

STD255 = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255


def _noise_clip(t=8, h=60, w=80, seed=0) -> np.ndarray:
    """Random texture plus 10 * t in frame t: a different crop in any frame would show."""
    base = np.random.default_rng(seed).integers(0, 150, (h, w, 3))
    return np.stack([base + 10 * i for i in range(t)]).astype(np.uint8)


def test_output_shape_dtype_and_normalisation():
    out = VideoTrainTransform(32)(_noise_clip(), torch.Generator().manual_seed(0))
    assert out.shape == (3, 8, 32, 32) and out.dtype == torch.float32
    mean_clip = np.broadcast_to((np.array(IMAGENET_MEAN) * 255).astype(np.float32), (4, 20, 20, 3))
    out = VideoTrainTransform(16)(torch.from_numpy(mean_clip.copy()))  # float input in 0-255 works too
    assert out.shape == (3, 4, 16, 16) and out.abs().max() < 1e-5


@pytest.mark.parametrize("seed", range(10))
def test_every_frame_gets_the_same_crop_and_flip(seed):
    out = VideoTrainTransform(24)(_noise_clip(), torch.Generator().manual_seed(seed))
    # crop, resize and flip are linear and shared, so frame t = frame 0 + 10 t / std exactly
    for t in range(1, 8):
        np.testing.assert_allclose((out[:, t] - out[:, 0]), (10 * t / STD255).expand(3, 24, 24), atol=1e-3)


def test_flip_flips_all_frames_with_the_same_crop():
    clip = _noise_clip()
    flipped = VideoTrainTransform(24, hflip=1.0)(clip, torch.Generator().manual_seed(5))
    plain = VideoTrainTransform(24, hflip=0.0)(clip, torch.Generator().manual_seed(5))
    assert not torch.allclose(flipped, plain)
    torch.testing.assert_close(flipped, plain.flip(-1))


def test_flip_happens_half_of_the_time():
    clip = _noise_clip(t=2, h=20, w=20)
    t_flip = VideoTrainTransform(20, scale=(1.0, 1.0), ratio=(1.0, 1.0))  # full frame: only the flip varies
    ref = VideoTrainTransform(20, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)(clip)
    g = torch.Generator().manual_seed(0)
    flips = 0
    for _ in range(400):
        out = t_flip(clip, g)
        if torch.allclose(out, ref.flip(-1)):
            flips += 1
        else:
            torch.testing.assert_close(out, ref)
    assert 160 < flips < 240


def test_crop_aspect_is_log_uniform_and_area_within_scale():
    g = torch.Generator().manual_seed(0)
    H = W = 1000
    logs, areas = [], []
    for _ in range(4000):
        top, left, h, w = random_resized_crop_params(H, W, generator=g)
        assert 0 <= top <= H - h and 0 <= left <= W - w
        logs.append(math.log(w / h))
        areas.append(h * w / (H * W))
    logs, areas = np.array(logs), np.array(areas)
    lo, hi = math.log(0.75), math.log(1.35)
    assert logs.min() > lo - 0.01 and logs.max() < hi + 0.01
    # log-uniform: half the mass below the geometric mean (a linear-uniform draw gives 0.43)
    assert abs((logs < (lo + hi) / 2).mean() - 0.5) < 0.03
    # and flat in log space: each quarter holds a quarter
    counts, _ = np.histogram(logs, bins=4, range=(lo, hi))
    assert np.all(np.abs(counts / len(logs) - 0.25) < 0.03)
    assert areas.min() > 0.3 - 0.01 and areas.max() <= 1.0
    # uniform in area where no draw is rejected (large areas with a skewed aspect do not fit
    # and are redrawn, as in torchvision): equal counts in [0.3, 0.4) and [0.4, 0.5)
    a, b = ((areas >= 0.3) & (areas < 0.4)).sum(), ((areas >= 0.4) & (areas < 0.5)).sum()
    assert abs(a / b - 1) < 0.15


def test_centre_crop_fallback_after_ten_misses():
    # 10 x 200: no crop of >= 30% of the area has an aspect ratio <= 1.35: the widest
    # allowed, round(10 * 1.35) = 14 wide, full height, centred
    g = torch.Generator().manual_seed(0)
    assert random_resized_crop_params(10, 200, generator=g) == (0, 93, 10, 14)
    # 200 x 10 (too tall): full width, height round(10 / 0.75) = 13, centred
    assert random_resized_crop_params(200, 10, generator=g) == (93, 0, 13, 10)
    assert random_resized_crop_params(20, 20, scale=(2.0, 3.0), generator=g) == (0, 0, 20, 20)  # never fits


def test_eval_transform_resizes_short_side_and_centre_crops():
    t = VideoEvalTransform(32)
    assert t.short_side == 36  # int(32 * 256 / 224)
    ramp = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.float32)[None, None, :, None], (3, 48, 64, 3)).copy()
    out = t(ramp)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    # centred: the ramp's crop is symmetric about the middle value
    mid = (127.5 - IMAGENET_MEAN[0] * 255) / (IMAGENET_STD[0] * 255)
    assert abs(out[0].mean().item() - mid) < 0.02
    assert torch.equal(t(ramp), out)  # no randomness
    tall = t(np.zeros((2, 90, 40, 3), np.uint8))
    assert tall.shape == (3, 2, 32, 32)
