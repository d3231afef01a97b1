"""Flow conventions and ops (jepa_video.flow_ops): known answers."""

from __future__ import annotations

import pytest
import torch
from jepa_video.flow_ops import (
    forward_backward_occlusion,
    image_gradients,
    local_correlation,
    upsample_flow,
    warp,
)


def _const_flow(b: int, h: int, w: int, fx: float, fy: float) -> torch.Tensor:
    flow = torch.empty(b, 2, h, w)
    flow[:, 0], flow[:, 1] = fx, fy
    return flow


@pytest.mark.parametrize("sx,sy", [(3, -2), (-1, 4), (0, 0)])
def test_warp_integer_translation_exact(sx: int, sy: int):
    g = torch.Generator().manual_seed(0)
    b, h, w = 2, 15, 21
    frame_t = torch.rand(b, 3, h, w, generator=g)
    # frame t+1 is frame t moved by (sx, sy): frame_t1[y + sy, x + sx] = frame_t[y, x]
    frame_t1 = torch.zeros_like(frame_t)
    ys, yd = slice(max(0, -sy), min(h, h - sy)), slice(max(0, sy), min(h, h + sy))
    xs, xd = slice(max(0, -sx), min(w, w - sx)), slice(max(0, sx), min(w, w + sx))
    frame_t1[..., yd, xd] = frame_t[..., ys, xs]
    rec, valid = warp(frame_t1, _const_flow(b, h, w, sx, sy), return_mask=True)
    m = valid.bool().expand_as(rec)
    assert m.any() and (m.sum() < m.numel()) == (sx != 0 or sy != 0)
    # exact up to float rounding of grid_sample's coordinate normalisation
    torch.testing.assert_close(rec[m], frame_t[m], rtol=0, atol=1e-5)
    # and the mask is exactly the region whose source pixel exists
    expect = torch.zeros(h, w, dtype=torch.bool)
    expect[ys, xs] = True
    assert torch.equal(valid[0, 0].bool(), expect)


def test_warp_subpixel_linear_ramp_exact():
    b, h, w = 1, 12, 17
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    a, c, d = 0.7, -1.3, 0.25
    img = (a * xx + c * yy + d).expand(b, 1, h, w)
    fx, fy = 0.3, -1.6
    out, valid = warp(img, _const_flow(b, h, w, fx, fy), return_mask=True)
    expect = a * (xx + fx) + c * (yy + fy) + d
    m = valid[0, 0].bool()
    assert m.sum() == (h - 2) * (w - 1)  # rows 0,1 sample y < 0; last column samples x > w-1
    torch.testing.assert_close(out[0, 0][m], expect[m], rtol=0, atol=1e-5)
    # a plain shift does not fit: the check can fail
    assert not torch.allclose(img[0, 0][m], expect[m], atol=1e-2)


def test_warp_mask_is_zero_exactly_outside():
    b, h, w = 1, 9, 11
    flow = torch.randn(b, 2, h, w, generator=torch.Generator().manual_seed(1)) * 4
    flow[0, 0, 0, 0] = float(w - 1)  # lands exactly on the last column centre: still inside
    flow[0, 1, 0, 0] = 0.0
    _, valid = warp(torch.ones(b, 1, h, w), flow, return_mask=True)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    px, py = xx + flow[0, 0], yy + flow[0, 1]
    inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    assert torch.equal(valid[0, 0].bool(), inside)
    assert valid[0, 0, 0, 0] == 1 and 0 < inside.sum() < h * w


def _brute_corr(f1, f2, r):
    b, c, h, w = f1.shape
    out = torch.zeros(b, (2 * r + 1) ** 2, h, w, dtype=f1.dtype)
    for y in range(h):
        for x in range(w):
            k = 0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        out[:, k, y, x] = (f1[:, :, y, x] * f2[:, :, y + dy, x + dx]).mean(1)
                    k += 1
    return out


def test_local_correlation_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    f1 = torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64)
    f2 = torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64)
    got = local_correlation(f1, f2, radius=2)
    assert got.shape == (2, 25, 7, 9)
    torch.testing.assert_close(got, _brute_corr(f1, f2, 2))
    # displacement (0, 0) is the middle channel and matters: a transposed order would fail
    assert not torch.allclose(got, _brute_corr(f1, f2.flip(-1).flip(-2), 2))


def test_upsample_flow_scales_constant_flow():
    flow = _const_flow(2, 5, 7, 1.5, -2.0)
    up = upsample_flow(flow, (10, 21))
    assert up.shape == (2, 2, 10, 21)
    torch.testing.assert_close(up[:, 0], torch.full((2, 10, 21), 4.5))
    torch.testing.assert_close(up[:, 1], torch.full((2, 10, 21), -4.0))


def test_forward_backward_occlusion():
    b, h, w = 1, 10, 12
    fw = _const_flow(b, h, w, 2.0, 1.0)
    _, valid = warp(fw, fw, return_mask=True)
    consistent = forward_backward_occlusion(fw, -fw)
    assert consistent.shape == (b, 1, h, w)
    inner = valid.bool()
    assert (consistent[inner] == 1).all()
    # pixels leaving the image read a zero backward flow: |f|^2 = 5 > 0.01 * 5 + 0.5
    assert (consistent[~inner] == 0).all()
    assert (forward_backward_occlusion(fw, fw) == 0).all()  # same direction both ways
    # small inconsistencies are tolerated by alpha2
    assert (forward_backward_occlusion(fw, -fw + 0.3)[inner] == 1).all()


def test_image_gradients():
    yy, xx = torch.meshgrid(torch.arange(4).float(), torch.arange(6).float(), indexing="ij")
    dx, dy = image_gradients((2 * xx - 3 * yy).view(1, 1, 4, 6))
    assert dx.shape == (1, 1, 4, 5) and dy.shape == (1, 1, 3, 6)
    assert (dx == 2).all() and (dy == -3).all()
