"""Fixed sin-cos position tables against an independent float64 numpy computation
(ijepa:src/models/vision_transformer.py, jepa:src/models/utils/pos_embs.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from jepa_core.nn.pos_embed import sincos_1d, sincos_2d, sincos_3d


def np_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """[sin(p * w_k) | cos(p * w_k)], w_k = 1 / 10000^(k / (dim/2)), float64, loops on purpose."""
    pos = np.asarray(pos, dtype=np.float64).reshape(-1)
    half = dim // 2
    out = np.zeros((len(pos), dim), dtype=np.float64)
    for i, p in enumerate(pos):
        for k in range(half):
            omega = 1.0 / 10000.0 ** (k / (dim / 2.0))
            out[i, k] = math.sin(p * omega)
            out[i, half + k] = math.cos(p * omega)
    return out


def np_2d(dim: int, gh: int, gw: int, order: str) -> np.ndarray:
    rows, cols = [], []
    for r in range(gh):  # raster order: token = row * gw + col
        for c in range(gw):
            rows.append(r)
            cols.append(c)
    first, second = (cols, rows) if order == "wh" else (rows, cols)
    return np.concatenate(
        [np_1d(dim // 2, np.array(first)), np_1d(dim // 2, np.array(second))], axis=1
    )


def np_3d(dim: int, t: int, gh: int, gw: int) -> np.ndarray:
    sub = 2 * math.ceil(dim / 6)
    ts, hs, ws = [], [], []
    for a in range(t):
        for b in range(gh):
            for c in range(gw):
                ts.append(a)
                hs.append(b)
                ws.append(c)
    full = np.concatenate(
        [np_1d(sub, np.array(ts)), np_1d(sub, np.array(hs)), np_1d(sub, np.array(ws))], axis=1
    )
    return full[:, :dim]


@pytest.mark.parametrize("dim", [2, 8, 16, 20])
def test_sincos_1d_matches_formula(dim):
    pos = torch.tensor([0.0, 1.0, 2.0, 7.0, 31.0, 100.0])
    got = sincos_1d(dim, pos)
    assert got.dtype == torch.float64
    assert got.shape == (6, dim)
    np.testing.assert_allclose(got.numpy(), np_1d(dim, pos.numpy()), rtol=0, atol=1e-12)


def test_sincos_1d_hand_values():
    t = sincos_1d(8, torch.arange(3.0))
    # position 0: all sines 0, all cosines 1
    assert torch.equal(t[0, :4], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(t[0, 4:], torch.ones(4, dtype=torch.float64))
    # k = 0 has omega 1: sin(p), cos(p); not interleaved (cos block starts at d/2)
    assert t[1, 0].item() == pytest.approx(math.sin(1.0), abs=1e-15)
    assert t[1, 4].item() == pytest.approx(math.cos(1.0), abs=1e-15)
    # k = 1 at dim 8: omega = 1 / 10000^(1/4) = 0.1
    assert t[2, 1].item() == pytest.approx(math.sin(0.2), abs=1e-15)
    assert t[2, 5].item() == pytest.approx(math.cos(0.2), abs=1e-15)
    # last frequency omega = 1/10000^(3/4) = 0.001
    assert t[2, 3].item() == pytest.approx(math.sin(0.002), abs=1e-15)


def test_sincos_1d_odd_dim_rejected():
    with pytest.raises(ValueError):
        sincos_1d(7, torch.arange(3.0))


@pytest.mark.parametrize("order", ["wh", "hw"])
@pytest.mark.parametrize("dim,gh,gw", [(16, 4, 4), (32, 3, 5), (8, 16, 16)])
def test_sincos_2d_matches_numpy(order, dim, gh, gw):
    got = sincos_2d(dim, gh, gw, order=order)
    assert got.dtype == torch.float32
    assert got.shape == (gh * gw, dim)
    want = np_2d(dim, gh, gw, order).astype(np.float32)  # float64 computed, then float32
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-7)


def test_sincos_2d_ijepa_order_first_half_is_column():
    dim, g = 16, 4
    t = sincos_2d(dim, g, order="wh").double()
    half = dim // 2
    # token 1 = (row 0, col 1): first half encodes column 1, second half row 0 (sin 0, cos 1)
    np.testing.assert_allclose(t[1, :half].numpy(), np_1d(half, np.array([1.0]))[0], atol=1e-7)
    assert torch.all(t[1, half : half + half // 2] == 0)
    assert torch.all(t[1, half + half // 2 :] == 1)
    # token g = (row 1, col 0): first half is position 0
    assert torch.all(t[g, : half // 2] == 0) and torch.all(t[g, half // 2 : half] == 1)
    # "hw" swaps the two halves
    s = sincos_2d(dim, g, order="hw")
    assert torch.equal(s[:, :half], t[:, half:].float())
    assert torch.equal(s[:, half:], t[:, :half].float())
    # default order is the I-JEPA one
    assert torch.equal(sincos_2d(dim, g), t.float())


def test_sincos_2d_square_default_and_dim_check():
    assert torch.equal(sincos_2d(8, 3), sincos_2d(8, 3, 3))
    with pytest.raises(ValueError):
        sincos_2d(6, 3)


@pytest.mark.parametrize(
    "dim,t,gh,gw", [(12, 2, 3, 3), (16, 3, 2, 4), (20, 2, 2, 2), (64, 2, 4, 4)]
)
def test_sincos_3d_uniform_power_matches_numpy(dim, t, gh, gw):
    got = sincos_3d(dim, t, gh, gw, uniform_power=True)
    assert got.shape == (t * gh * gw, dim)
    want = np_3d(dim, t, gh, gw).astype(np.float32)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-7)


def test_sincos_3d_layout_t_h_w():
    # dim 16: each axis 2*ceil(16/6) = 6 channels: t [0:6], h [6:12], w [12:16] (truncated)
    tab = sincos_3d(16, 2, 3, 4).double()
    tok = 1 * 12 + 2 * 4 + 3  # (t=1, h=2, w=3), t slowest
    np.testing.assert_allclose(tab[tok, 0:6].numpy(), np_1d(6, np.array([1.0]))[0], atol=1e-7)
    np.testing.assert_allclose(tab[tok, 6:12].numpy(), np_1d(6, np.array([2.0]))[0], atol=1e-7)
    np.testing.assert_allclose(tab[tok, 12:16].numpy(), np_1d(6, np.array([3.0]))[0][:4], atol=1e-7)
    # token 0: every sine block is 0
    assert torch.all(tab[0, 0:3] == 0) and torch.all(tab[0, 3:6] == 1)


def test_sincos_3d_non_uniform_power():
    dim, t, g = 16, 2, 2
    tab = sincos_3d(dim, t, g, uniform_power=False)
    ts = np.repeat(np.arange(t), g * g)
    hs = np.tile(np.repeat(np.arange(g), g), t)
    ws = np.tile(np.arange(g), t * g)
    want = np.concatenate([np_1d(8, ts), np_1d(4, hs), np_1d(4, ws)], axis=1).astype(np.float32)
    np.testing.assert_allclose(tab.numpy(), want, rtol=0, atol=1e-7)
