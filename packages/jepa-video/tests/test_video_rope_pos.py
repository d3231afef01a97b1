"""3-D sin-cos table of V-JEPA (jepa:src/models/utils/pos_embs.py) and 3-D RoPE of V-JEPA 2
(vjepa2:src/models/utils/modules.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from jepa_core.nn import Attention, sincos_3d
from jepa_video.nn import RoPEAttention, apply_rope_3d, rope_axis_dim, token_coordinates


def _np_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _np_3d(dim: int, depth: int, size: int, uniform_power: bool) -> np.ndarray:
    # meshgrid(h, d, w) in "xy" indexing has shape (depth, size, size): (t, h, w) raster order
    gh, gd, gw = np.meshgrid(np.arange(size, dtype=float), np.arange(depth, dtype=float), np.arange(size, dtype=float))
    if uniform_power:
        dt = dh = dw = int(np.ceil(dim / 6) * 2)
    else:
        dt, dh, dw = dim // 2, dim // 4, dim // 4
    table = np.concatenate([_np_1d(dt, gd), _np_1d(dh, gh), _np_1d(dw, gw)], axis=1)
    return table[:, :dim]


@pytest.mark.parametrize(
    "dim,depth,size,uniform", [(1024, 8, 14, True), (384, 8, 14, True), (1280, 2, 5, True), (64, 3, 4, False)]
)
def test_sincos_3d_matches_numpy(dim, depth, size, uniform):
    ours = sincos_3d(dim, depth, size, uniform_power=uniform)
    ref = _np_3d(dim, depth, size, uniform)
    assert ours.dtype == torch.float32 and ours.shape == (depth * size * size, dim)
    np.testing.assert_array_equal(ours.numpy(), ref.astype(np.float32))


def test_sincos_3d_uniform_power_split_for_vit_large():
    # D=1024: 2*ceil(1024/6) = 342 channels per axis, 1026 in all, the last 2 of the w block cut.
    table = sincos_3d(1024, 8, 14).double()
    n = torch.arange(1568)
    t, h, w = n // 196, (n % 196) // 14, n % 14
    omega = 1.0 / 10000 ** (torch.arange(171, dtype=torch.float64) / 171.0)
    for k, coord in enumerate((t, h, w)):
        ang = coord[:, None].double() * omega
        full = torch.cat([ang.sin(), ang.cos()], dim=1)  # 342 channels
        block = table[:, 342 * k : 342 * (k + 1)]
        width = block.shape[1]
        assert width == (342 if k < 2 else 340)
        torch.testing.assert_close(block, full[:, :width], atol=1e-7, rtol=0)
    # predictor width 384: exactly 128 per axis
    assert 2 * math.ceil(384 / 6) * 3 == 384


# -------------------------------------------------------------------------------- RoPE


def test_axis_dims_from_reference():
    assert [rope_axis_dim(d) for d in (64, 80, 32, 88)] == [20, 26, 10, 28]


def test_token_coordinates():
    ids = torch.arange(2 * 3 * 4)
    f, r, c = token_coordinates(ids, 3, 4)
    assert torch.equal(ids, f * 12 + r * 4 + c)
    assert f.max() == 1 and r.max() == 2 and c.max() == 3


def _hand_rotate(x: list[float], angles: list[float]) -> list[float]:
    out = []
    for i in range(0, len(x), 2):
        a0, a1 = angles[i], angles[i + 1]
        out += [x[i] * math.cos(a0) - x[i + 1] * math.sin(a0), x[i + 1] * math.cos(a1) + x[i] * math.sin(a1)]
    return out


@pytest.mark.parametrize("fix", [False, True])
def test_rope_known_answer(fix):
    # head_dim 14 -> S = 2*floor(4/2) = 4 per axis, 12 rotated, 2 untouched.
    # Token 23 on a 2x3x4 grid: frame 1, row 2, col 3. omega = [1, 1/100].
    x = torch.arange(1.0, 15.0, dtype=torch.float64).view(1, 1, 1, 14)
    out = apply_rope_3d(x, torch.tensor([23]), (3, 4), fix_tiling=fix)[0, 0, 0].tolist()
    want = []
    for axis, pos in enumerate((1, 2, 3)):
        th = [pos * 1.0, pos * 0.01]
        angles = [th[0], th[0], th[1], th[1]] if fix else [th[0], th[1], th[0], th[1]]
        want += _hand_rotate(x[0, 0, 0, 4 * axis : 4 * axis + 4].tolist(), angles)
    want += [13.0, 14.0]
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)


def test_tiled_differs_from_interleaved_and_zero_position_is_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 64)
    ids = torch.tensor([0, 17, 100, 333, 1000])
    a = apply_rope_3d(x, ids, (8, 8), fix_tiling=False)
    b = apply_rope_3d(x, ids, (8, 8), fix_tiling=True)
    assert torch.equal(a[:, :, 0], x[:, :, 0]) and torch.equal(b[:, :, 0], x[:, :, 0])  # position (0, 0, 0)
    assert (a[:, :, 1:] - b[:, :, 1:]).abs().max() > 1e-2
    torch.testing.assert_close(a[..., 60:], x[..., 60:], rtol=0, atol=0)  # last 4 channels untouched


def test_interleaved_rotation_preserves_norms_tiled_does_not():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 6, 32, dtype=torch.float64)
    ids = torch.tensor([5, 40, 77, 123, 200, 255])
    fixed = apply_rope_3d(x, ids, (8, 8), fix_tiling=True)
    torch.testing.assert_close(fixed.norm(dim=-1), x.norm(dim=-1))
    # per adjacent pair too: a genuine rotation of each pair
    torch.testing.assert_close(fixed.unflatten(-1, (-1, 2)).norm(dim=-1), x.unflatten(-1, (-1, 2)).norm(dim=-1))
    tiled = apply_rope_3d(x, ids, (8, 8), fix_tiling=False)
    assert (tiled.norm(dim=-1) - x.norm(dim=-1)).abs().max() > 1e-3  # the official quirk is not a rotation


def _score(q, k, iq, ik, fix):
    grid = (6, 7)
    rq = apply_rope_3d(q, torch.tensor([iq]), grid, fix_tiling=fix)
    rk = apply_rope_3d(k, torch.tensor([ik]), grid, fix_tiling=fix)
    return float((rq * rk).sum())


def _idx(t, h, w):
    return t * 42 + h * 7 + w


def test_relative_position_property():
    torch.manual_seed(2)
    q = torch.randn(1, 1, 1, 48, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 48, dtype=torch.float64)
    pairs = [((0, 1, 2), (1, 2, 4)), ((2, 2, 0), (3, 3, 2)), ((4, 0, 3), (5, 1, 5))]  # same offset (1, 1, 2)
    fixed = [_score(q, k, _idx(*a), _idx(*b), True) for a, b in pairs]
    assert max(fixed) - min(fixed) < 1e-9
    tiled = [_score(q, k, _idx(*a), _idx(*b), False) for a, b in pairs]
    assert max(tiled) - min(tiled) > 1e-3


def test_angles_in_activation_dtype():
    x = torch.randn(1, 1, 3, 64).to(torch.bfloat16)
    out = apply_rope_3d(x, torch.tensor([0, 5, 9]), (4, 4))
    assert out.dtype == torch.bfloat16


def test_rope_attention_names_and_zero_positions():
    torch.manual_seed(3)
    plain = Attention(48, 4)
    rope = RoPEAttention(48, 4)
    assert set(rope.state_dict()) == set(plain.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    rope.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 48)
    # all tokens at position (0, 0, 0): no rotation, so RoPE attention equals plain attention
    torch.testing.assert_close(rope(x, torch.zeros(5, dtype=torch.long), (4, 4)), plain(x))
    ids = torch.tensor([[0, 3, 9, 20, 31], [1, 2, 4, 8, 16]])
    y = rope(x, ids, (4, 4))
    y0 = rope(x[:1], ids[0], (4, 4))
    torch.testing.assert_close(y[:1], y0)  # per-row positions
