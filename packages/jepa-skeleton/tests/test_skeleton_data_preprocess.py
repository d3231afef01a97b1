"""MAMP's preprocessing chain: valid frames, centring, valid crop + resize, rotation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from jepa_core.data import CorruptSampleError
from jepa_skeleton.graph import NTU25
from jepa_skeleton.preprocess import (
    MAMPTransform,
    center,
    random_rotation,
    rotation_matrix,
    valid_crop_resize,
    valid_frames,
)

torch.set_num_threads(1)


def _sample(T=50, valid=40, M=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, T, 25, M, generator=g) + torch.tensor([0.3, 0.1, 3.0])[:, None, None, None]
    x[:, valid:] = 0
    return x


def test_valid_frames():
    x = _sample(T=50, valid=37)
    assert valid_frames(x) == 37
    x[:, :, :, 0] = 0  # only body 1 left: still valid
    assert valid_frames(x) == 37
    assert valid_frames(torch.zeros(3, 10, 25, 2)) == 0


def test_center_puts_the_centre_joint_at_origin():
    x = _sample(T=30, valid=20)
    x[:, :3, :, 0] = 0  # body 0 appears at frame 3
    x[:, 25:, :, 1] = 0
    x[:, 10:15, :, 1] = 0  # body 1 missing in frames 10-14
    y = center(x, NTU25)
    assert torch.allclose(y[:, 3, 1, 0], torch.zeros(3), atol=1e-6)
    origin = x[:, 3, 1, 0]
    present = (x != 0).any(0).any(1)  # (T, M)
    expected = (x - origin[:, None, None, None]) * present[None, :, None, :]
    assert torch.allclose(y, expected)
    assert not y[:, 10:15, :, 1].any() and not y[:, :3, :, 0].any() and not y[:, 20:].any()
    with pytest.raises(CorruptSampleError):
        center(torch.zeros(3, 5, 25, 2))


def test_valid_crop_resize_keeps_a_linear_ramp_linear():
    T, valid = 300, 240
    ramp = torch.arange(1, valid + 1, dtype=torch.float32)
    x = torch.zeros(3, T, 25, 2)
    x[:, :valid] = ramp[None, :, None, None] * torch.linspace(1, 2, 25)[None, None, :, None]
    y = valid_crop_resize(x, valid_frames(x), (1.0,), 120)
    assert y.shape == (3, 120, 25, 2)
    # the whole valid part, downsampled 2x with align_corners=False: the midpoints of pairs
    expected = (torch.arange(120) * 2 + 1.5)[None, :, None, None] * torch.linspace(1, 2, 25)[
        None, None, :, None]
    assert torch.allclose(y, expected.expand_as(y), atol=1e-4)
    d = y[0, 1:, 0, 0] - y[0, :-1, 0, 0]
    assert torch.allclose(d, torch.full_like(d, 2.0), atol=1e-4)  # still a straight line
    # equal to resizing exactly the valid part (no zero frame leaks in)
    ref = F.interpolate(x[:, :valid].permute(0, 2, 3, 1).reshape(1, -1, valid), size=120,
                        mode="linear", align_corners=False)
    assert torch.allclose(y.permute(0, 2, 3, 1).reshape(1, -1, 120), ref)
    # upsampling: linear in the interior, no zeros anywhere
    up = valid_crop_resize(x[:, :60], 30, (1.0,), 120)
    assert (up[0] > 0).all()
    d = up[0, 4:-4, 0, 0].diff()
    assert torch.allclose(d, torch.full_like(d, 0.25), atol=1e-4)


def test_valid_crop_resize_crops():
    x = torch.zeros(1, 200, 25, 1)
    x[:, :100] = torch.arange(1, 101, dtype=torch.float32)[None, :, None, None]
    # test: centre crop, bias int(0.025 * 100) = 2 frames each side -> frames 3 .. 98
    y = valid_crop_resize(x, 100, (0.95,), 96)
    assert torch.allclose(y[0, :, 0, 0], torch.arange(3, 99, dtype=torch.float32))
    # train: crop length clip(floor(100 p), 64, 100) somewhere inside the valid frames
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        y = valid_crop_resize(x, 100, (0.5, 1.0), 120, generator=g)
        assert y.shape == (1, 120, 25, 1) and (y >= 1).all() and (y <= 100).all()
        span = y[0, -1, 0, 0] - y[0, 0, 0, 0]
        assert 64 * 0.9 - 2 < span <= 100
    a = valid_crop_resize(x, 100, (0.5, 1.0), 120, generator=torch.Generator().manual_seed(3))
    b = valid_crop_resize(x, 100, (0.5, 1.0), 120, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(CorruptSampleError):
        valid_crop_resize(x, 0, (0.95,), 120)


def test_rotation_preserves_bone_lengths():
    r = rotation_matrix(torch.tensor([0.2, -0.3, 0.1], dtype=torch.float64))
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=r.dtype), atol=1e-12)
    assert abs(torch.linalg.det(r).item() - 1) < 1e-12
    x = _sample(T=20, valid=15)
    g = torch.Generator().manual_seed(1)
    y = random_rotation(x, generator=g)
    assert not torch.allclose(x, y)
    for a, b in NTU25.edges:
        assert torch.allclose((y[:, :, a] - y[:, :, b]).norm(dim=0),
                              (x[:, :, a] - x[:, :, b]).norm(dim=0), atol=1e-5)
    assert not y[:, 15:].any()  # padding stays zero
    # MAMP's range: each angle within +-0.3 rad; the rotation is the same for every frame
    flat_x, flat_y = x[:, :15].reshape(3, -1), y[:, :15].reshape(3, -1)
    rr = torch.linalg.lstsq(flat_x.T.double(), flat_y.T.double()).solution.T
    assert abs(torch.linalg.det(rr).item() - 1) < 1e-4
    angle = math.acos(max(-1.0, min(1.0, (rr.trace().item() - 1) / 2)))
    assert angle <= 0.3 * math.sqrt(3) + 1e-3


def test_mamp_transform():
    x = _sample(T=300, valid=150)
    train = MAMPTransform(train=True)
    test = MAMPTransform(train=False)
    assert train.p_interval == (0.5, 1.0) and test.p_interval == (0.95,)
    torch.manual_seed(0)
    a = train(x)
    torch.manual_seed(0)
    b = train(x)
    assert a.shape == (3, 120, 25, 2) and torch.equal(a, b)  # global RNG when no generator
    t1, t2 = test(x), test(x)
    assert torch.equal(t1, t2)
    # test: centred on body 0's spine-mid at the first kept frame's neighbourhood
    c = center(x)
    assert torch.allclose(t1, valid_crop_resize(c, 150, (0.95,), 120))
    bad = x.clone()
    bad[0, 3, 4, 0] = float("nan")
    with pytest.raises(CorruptSampleError, match="non-finite"):
        train(bad)
    with pytest.raises(CorruptSampleError, match="no valid frame"):
        test(torch.zeros(3, 300, 25, 2))
    with pytest.raises(ValueError, match="25 joints, got 17"):
        test(torch.ones(3, 300, 17, 2))
