"""Optical-flow evaluation: metrics, colour coding, flow file formats and a dataset of user data.

Conventions
-----------
A flow field is a float tensor ``[B, 2, H, W]`` or ``[2, H, W]`` in pixels, channel 0 the
horizontal component (u, x, positive to the right) and channel 1 the vertical one (v, y,
positive downwards): pixel ``(x, y)`` of the first image moves to ``(x + u, y + v)`` in the
second. A ``valid`` mask ``[B, H, W]`` / ``[H, W]`` (bool) marks the pixels that have ground
truth (KITTI's flow is sparse); an ``occluded`` mask of the same shape marks the pixels that
are not visible in the second image. Ground-truth pixels that are not finite or have a
component of magnitude >= 1e9 (Middlebury's "unknown flow", :data:`UNKNOWN_FLOW`) are always
treated as invalid.

Metrics (:func:`flow_metrics`, :class:`FlowMetricAccumulator`)
--------------------------------------------------------------
* ``epe``: mean end-point error ``||pred - gt||_2`` over the valid pixels;
* ``epe_noc`` / ``epe_occ``: the same over the valid non-occluded / occluded pixels (only when
  an ``occluded`` mask is given);
* ``fl_all``: KITTI 2015's outlier rate *in percent* (Menze & Geiger, "Object Scene Flow for
  Autonomous Vehicles", CVPR 2015): a pixel is an outlier when its EPE is > 3 px *and* > 5 % of
  the ground-truth magnitude;
* ``px1`` / ``px3`` / ``px5``: the *fraction* (0-1) of valid pixels with EPE < 1 / 3 / 5 px;
* ``n_pixels``: the number of valid pixels the numbers are over.

A mean over no pixels is ``None`` (never NaN, so that it cannot be averaged into a table
unnoticed): ``epe_occ`` is ``None`` when no valid pixel is occluded, ``epe_noc`` / ``epe_occ``
are ``None`` when no ``occluded`` mask was given, and every metric is ``None`` when there is no
valid pixel. The accumulator sums per-pixel counts, so the numbers over a dataset equal those
of :func:`flow_metrics` on the concatenated batches (a mean over pixels, not a mean of
per-batch means).

Colour coding (:func:`flow_to_color`)
-------------------------------------
The Middlebury colour wheel of Baker et al., "A Database and Evaluation Methodology for Optical
Flow", IJCV 2011: 55 hues (red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11,
blue-magenta 13, magenta-red 6), the hue from the flow's direction, the saturation from its
magnitude over ``max_flow`` (default: the largest magnitude); zero flow is white, magnitudes
beyond ``max_flow`` are darkened (x 0.75), unknown flow is black.

File formats
------------
* ``.flo`` (Middlebury, Sintel; Baker et al. 2011): little-endian float32 magic ``202021.25``,
  int32 width, int32 height, then ``H * W * 2`` float32, row-major, interleaved ``(u, v)``.
* KITTI 16-bit PNG (Geiger et al. 2012, Menze & Geiger 2015; the devkit's
  ``io_flow.h``): 3 channels of uint16, ``u = (R - 2**15) / 64``, ``v = (G - 2**15) / 64``,
  valid where ``B > 0``; flow is quantised to 1/64 px within +-512 px. Pillow cannot read or
  write 16-bit RGB PNGs (it has no such mode and truncates them to 8 bits), so this module has
  its own small PNG codec for exactly this case (zlib; writes filter type 0, reads filter types
  0-4; no interlacing).
* ``.pfm`` (read only; e.g. FlyingThings3D): ``PF`` header (3 channels, u, v and an unused
  third), width height, scale (negative: little-endian), rows bottom to top.

:func:`read_flow` dispatches on the extension. Damaged or unexpected files raise
:class:`FlowFileError` (a ``ValueError``) naming the file and the problem.

Dataset (:class:`FlowFolder`)
-----------------------------
Image pairs with ground-truth flow in the Sintel or the KITTI 2015 layout, items
``(img1 [3, H, W] float in [0, 1], img2, flow [2, H, W] float32, valid [H, W] bool)``. Images
are read with Pillow (imported when first needed).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import torch

__all__ = [
    "FLO_MAGIC",
    "UNKNOWN_FLOW",
    "FlowFileError",
    "FlowFolder",
    "FlowMetricAccumulator",
    "endpoint_error",
    "flow_metrics",
    "flow_to_color",
    "make_colorwheel",
    "mean_flow",
    "mean_flow_baseline",
    "plot_flows",
    "read_flo",
    "read_flow",
    "read_kitti_flow",
    "read_pfm",
    "read_png16_rgb",
    "write_flo",
    "write_kitti_flow",
    "write_png16_rgb",
    "zero_flow_baseline",
]

FLO_MAGIC = 202021.25
"""The ``.flo`` magic number (the bytes ``PIEH`` read as a little-endian float32)."""

UNKNOWN_FLOW = 1e9
"""Middlebury marks unknown flow with components of at least this magnitude."""

OUTLIER_PX = 3.0
OUTLIER_REL = 0.05
KITTI_SCALE = 64.0
KITTI_OFFSET = 2**15


class FlowFileError(ValueError):
    """A flow file that cannot be read: wrong format, damaged or truncated."""


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _as_flow(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() not in (3, 4) or t.shape[-3] != 2:
        raise ValueError(f"{name}: expected a flow [B, 2, H, W] or [2, H, W], got shape {tuple(t.shape)}")
    return t.float()


def _as_mask(m, shape: torch.Size, name: str) -> torch.Tensor:
    t = torch.as_tensor(m)
    if t.dtype != torch.bool:
        t = t != 0
    if t.shape != shape:
        raise ValueError(f"{name}: expected a mask of shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def _known(gt: torch.Tensor) -> torch.Tensor:
    """Pixels where the ground truth is known: finite and below Middlebury's unknown-flow mark."""
    return (torch.isfinite(gt) & (gt.abs() < UNKNOWN_FLOW)).all(dim=-3)


def _epe_and_valid(pred, gt, valid):
    pred = _as_flow(pred, "pred")
    gt = _as_flow(gt, "gt").to(pred.device)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    ok = _known(gt)
    if valid is not None:
        ok = ok & _as_mask(valid, ok.shape, "valid").to(ok.device)
    epe = torch.linalg.vector_norm(pred - gt, dim=-3)
    return epe, ok, gt


def endpoint_error(pred, gt, valid=None) -> torch.Tensor:
    """Per-pixel end-point error ``||pred - gt||_2``: ``[B, H, W]`` (or ``[H, W]``).

    Pixels that are not valid (``valid`` False, or unknown ground truth) are NaN.
    """
    epe, ok, _ = _epe_and_valid(pred, gt, valid)
    return torch.where(ok, epe, torch.full_like(epe, float("nan")))


class FlowMetricAccumulator:
    """Sums per-pixel counts over batches; :meth:`compute` gives :func:`flow_metrics`' dict.

    ``update`` takes the arguments of :func:`flow_metrics`. Pass ``occluded`` for every batch
    or for none (mixing raises ``ValueError``: the noc/occ split would cover part of the data).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.sum_epe = 0.0
        self.n_outliers = 0
        self.n_px = {1: 0, 3: 0, 5: 0}
        self.n_noc = self.n_occ = 0
        self.sum_epe_noc = self.sum_epe_occ = 0.0
        self._with_occlusion: bool | None = None

    @torch.no_grad()
    def update(self, pred, gt, valid=None, occluded=None) -> None:
        epe, ok, gt = _epe_and_valid(pred, gt, valid)
        with_occ = occluded is not None
        if self._with_occlusion is not None and with_occ != self._with_occlusion:
            raise ValueError("pass `occluded` for every batch or for none")
        self._with_occlusion = with_occ
        e = epe[ok].double()
        self.n += e.numel()
        self.sum_epe += e.sum().item()
        mag = torch.linalg.vector_norm(gt, dim=-3)[ok].double()
        self.n_outliers += int(((e > OUTLIER_PX) & (e > OUTLIER_REL * mag)).sum())
        for t in self.n_px:
            self.n_px[t] += int((e < t).sum())
        if with_occ:
            occ = _as_mask(occluded, ok.shape, "occluded").to(ok.device)[ok]
            self.n_occ += int(occ.sum())
            self.n_noc += int((~occ).sum())
            self.sum_epe_occ += e[occ].sum().item()
            self.sum_epe_noc += e[~occ].sum().item()

    def compute(self) -> dict:
        def mean(s, n):
            return s / n if n else None

        n = self.n
        out = {
            "epe": mean(self.sum_epe, n),
            "epe_noc": mean(self.sum_epe_noc, self.n_noc) if self._with_occlusion else None,
            "epe_occ": mean(self.sum_epe_occ, self.n_occ) if self._with_occlusion else None,
            "fl_all": mean(100.0 * self.n_outliers, n),
        }
        for t, k in self.n_px.items():
            out[f"px{t}"] = mean(float(k), n)
        out["n_pixels"] = n
        return out


def flow_metrics(pred, gt, valid=None, occluded=None) -> dict:
    """``epe``, ``epe_noc``, ``epe_occ``, ``fl_all`` (%), ``px1``, ``px3``, ``px5`` (fractions)
    and ``n_pixels`` over the valid pixels (see the module docstring; empty means are None)."""
    acc = FlowMetricAccumulator()
    acc.update(pred, gt, valid, occluded)
    return acc.compute()


def _gt_batches(data: Iterable):
    """``(flow, valid, occluded)`` from each item of ``data``: a flow tensor, ``(flow, valid)``,
    ``(flow, valid, occluded)`` or a :class:`FlowFolder` item / batch ``(img1, img2, flow, valid)``."""
    for item in data:
        if isinstance(item, torch.Tensor | np.ndarray):
            yield item, None, None
        elif len(item) == 2:
            yield item[0], item[1], None
        elif len(item) == 3:
            yield item[0], item[1], item[2]
        elif len(item) == 4:
            yield item[2], item[3], None
        else:
            raise ValueError(
                "expected items flow, (flow, valid), (flow, valid, occluded) or "
                f"(img1, img2, flow, valid); got a sequence of {len(item)}"
            )


def mean_flow(data: Iterable) -> torch.Tensor:
    """The mean flow vector ``[2]`` over the valid pixels of ``data`` (items as in
    :func:`zero_flow_baseline`), e.g. of a training set, for :func:`mean_flow_baseline`."""
    s = torch.zeros(2, dtype=torch.float64)
    n = 0
    for gt, valid, _ in _gt_batches(data):
        gt = _as_flow(gt, "gt")
        ok = _known(gt)
        if valid is not None:
            ok = ok & _as_mask(valid, ok.shape, "valid")
        s += gt.movedim(-3, -1)[ok].double().sum(0).cpu()
        n += int(ok.sum())
    if n == 0:
        raise ValueError("mean_flow: no valid ground-truth pixel in the data")
    return (s / n).float()


def _constant_baseline(data: Iterable, vector: torch.Tensor) -> dict:
    acc = FlowMetricAccumulator()
    for gt, valid, occ in _gt_batches(data):
        gt = _as_flow(gt, "gt")
        pred = vector.to(gt).view(2, 1, 1).expand_as(gt)
        acc.update(pred, gt, valid, occ)
    return acc.compute()


def zero_flow_baseline(data: Iterable) -> dict:
    """Metrics of predicting zero flow everywhere, over ``data``: an iterable of flow tensors,
    ``(flow, valid)``, ``(flow, valid, occluded)`` or ``(img1, img2, flow, valid)`` items
    (e.g. a :class:`FlowFolder` or a ``DataLoader`` over one)."""
    return _constant_baseline(data, torch.zeros(2))


def mean_flow_baseline(data: Iterable, train_mean) -> dict:
    """Metrics of predicting the constant vector ``train_mean`` ``[2]`` (the training set's
    mean flow, :func:`mean_flow`) everywhere, over ``data`` (as :func:`zero_flow_baseline`)."""
    v = torch.as_tensor(train_mean, dtype=torch.float32).flatten()
    if v.numel() != 2:
        raise ValueError(f"train_mean: expected a vector (u, v), got shape {tuple(v.shape)}")
    return _constant_baseline(data, v)


# --------------------------------------------------------------------------------------------
# Colour coding and plots
# --------------------------------------------------------------------------------------------


def make_colorwheel() -> np.ndarray:
    """The Middlebury colour wheel (Baker et al. 2011): ``[55, 3]`` float RGB in 0..255."""
    ry, yg, gc, cb, bm, mr = 15, 6, 4, 11, 13, 6
    wheel = np.zeros((ry + yg + gc + cb + bm + mr, 3))

    def ramp(n):
        return np.floor(255 * np.arange(n) / n)

    c = 0
    wheel[c : c + ry, 0], wheel[c : c + ry, 1] = 255, ramp(ry)  # red -> yellow
    c += ry
    wheel[c : c + yg, 0], wheel[c : c + yg, 1] = 255 - ramp(yg), 255  # yellow -> green
    c += yg
    wheel[c : c + gc, 1], wheel[c : c + gc, 2] = 255, ramp(gc)  # green -> cyan
    c += gc
    wheel[c : c + cb, 1], wheel[c : c + cb, 2] = 255 - ramp(cb), 255  # cyan -> blue
    c += cb
    wheel[c : c + bm, 2], wheel[c : c + bm, 0] = 255, ramp(bm)  # blue -> magenta
    c += bm
    wheel[c : c + mr, 2], wheel[c : c + mr, 0] = 255 - ramp(mr), 255  # magenta -> red
    return wheel


def _flow_numpy(flow) -> np.ndarray:
    if isinstance(flow, torch.Tensor):
        flow = flow.detach().cpu().numpy()
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"expected a flow [2, H, W], got shape {flow.shape}")
    return flow


def flow_to_color(flow, max_flow: float | None = None, valid=None) -> np.ndarray:
    """Colour-code a flow ``[2, H, W]`` with the Middlebury wheel: uint8 ``[H, W, 3]``.

    Hue from the direction, saturation from ``|flow| / max_flow`` (default: the largest valid
    magnitude); beyond ``max_flow`` the colour is darkened; unknown or invalid pixels are black.
    """
    f = _flow_numpy(flow)
    known = np.isfinite(f).all(0) & (np.abs(f) < UNKNOWN_FLOW).all(0)
    if valid is not None:
        known &= np.asarray(torch.as_tensor(valid).cpu(), dtype=bool)
    u = np.where(known, f[0], 0.0)
    v = np.where(known, f[1], 0.0)
    rad = np.hypot(u, v)
    if max_flow is None:
        max_flow = float(rad.max()) if rad.size else 0.0
    u, v, rad = (x / max(max_flow, np.finfo(np.float32).eps) for x in (u, v, rad))

    wheel = make_colorwheel() / 255.0
    n = len(wheel)
    a = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (a + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % n
    w = (fk - k0)[..., None]
    col = (1 - w) * wheel[k0] + w * wheel[k1]
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)
    img = np.floor(255 * col).clip(0, 255).astype(np.uint8)
    img[~known] = 0
    return img


def plot_flows(images, gt_flows, pred_flows, path, valids=None, titles=None) -> Path:
    """A PNG grid, one row per sample: image, ground-truth flow, predicted flow (both coloured
    with the ground truth's largest magnitude) and the EPE map. ``images`` ``[N, 3, H, W]``
    in [0, 1] (or ``[N, H, W, 3]``), flows ``[N, 2, H, W]``; sequences of samples work too.
    Rendered with the non-interactive Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(gt_flows)
    if len(images) != n or len(pred_flows) != n:
        raise ValueError(f"got {len(images)} images, {n} ground-truth and {len(pred_flows)} predicted flows")
    fig = Figure(figsize=(12, 2.6 * n))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 4, squeeze=False)
    for i in range(n):
        img = images[i]
        img = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = img.transpose(1, 2, 0)
        img = img.squeeze(-1) if img.shape[-1] == 1 else img
        valid = None if valids is None else valids[i]
        gt, pred = _flow_numpy(gt_flows[i]), _flow_numpy(pred_flows[i])
        gt_c = flow_to_color(gt, valid=valid)
        mag = np.hypot(*gt)
        ok = np.isfinite(mag) & (mag < UNKNOWN_FLOW) & (True if valid is None else np.asarray(valid, bool))
        max_flow = float(mag[ok].max()) if ok.any() else None
        epe = endpoint_error(torch.from_numpy(pred), torch.from_numpy(gt), valid).numpy()
        panels = [
            (img, "image", {"cmap": "gray"} if img.ndim == 2 else {}),
            (gt_c, "ground truth", {}),
            (flow_to_color(pred, max_flow=max_flow), "prediction", {}),
            (epe, f"EPE (mean {np.nanmean(epe):.2f} px)" if np.isfinite(epe).any() else "EPE", {"cmap": "magma"}),
        ]
        for j, (data, name, kw) in enumerate(panels):
            ax = axes[i, j]
            im = ax.imshow(data, **kw)
            ax.set_title(name if titles is None or j else f"{titles[i]}: {name}", fontsize=9)
            ax.set_axis_off()
            if j == 3:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------------------------
# .flo
# --------------------------------------------------------------------------------------------


def _flow_chw_numpy(flow, name="flow") -> np.ndarray:
    if isinstance(flow, torch.Tensor):
        flow = flow.detach().cpu().numpy()
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"{name}: expected a flow [2, H, W], got shape {flow.shape}")
    return flow


def read_flo(path) -> torch.Tensor:
    """Read a Middlebury/Sintel ``.flo`` file: float32 ``[2, H, W]``."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 12:
        raise FlowFileError(f"{path}: not a .flo file: {len(data)} bytes, shorter than the 12-byte header")
    magic = struct.unpack("<f", data[:4])[0]
    if magic != FLO_MAGIC:
        raise FlowFileError(
            f"{path}: not a .flo file: magic number {magic!r} (bytes {data[:4]!r}), expected {FLO_MAGIC} (b'PIEH')"
        )
    w, h = struct.unpack("<ii", data[4:12])
    if w <= 0 or h <= 0 or w * h > 2**31:
        raise FlowFileError(f"{path}: implausible size width={w} height={h} in the header")
    expected = 12 + 8 * w * h
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise FlowFileError(
            f"{path}: {what}: a {w}x{h} flow needs {expected} bytes (12 header + {8 * w * h} data), file has {len(data)}"
        )
    flow = np.frombuffer(data, dtype="<f4", offset=12).reshape(h, w, 2).transpose(2, 0, 1)
    return torch.from_numpy(flow.astype(np.float32))


def write_flo(path, flow) -> None:
    """Write a flow ``[2, H, W]`` as a ``.flo`` file (float32; bit-exact for float32 input)."""
    f = _flow_chw_numpy(flow).astype("<f4")
    _, h, w = f.shape
    with open(path, "wb") as fh:
        fh.write(struct.pack("<fii", FLO_MAGIC, w, h))
        fh.write(np.ascontiguousarray(f.transpose(1, 2, 0)).tobytes())


# --------------------------------------------------------------------------------------------
# 16-bit RGB PNG (KITTI)
# --------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png16_rgb(path, array: np.ndarray) -> None:
    """Write ``array`` uint16 ``[H, W, 3]`` as a 16-bit RGB PNG (no interlacing, filter 0)."""
    a = np.asarray(array)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint16:
        raise ValueError(f"expected uint16 [H, W, 3], got {a.dtype} {a.shape}")
    h, w, _ = a.shape
    rows = np.ascontiguousarray(a.astype(">u2")).view(np.uint8).reshape(h, w * 6)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    with open(path, "wb") as fh:
        fh.write(_PNG_SIGNATURE)
        fh.write(_png_chunk(b"IHDR", ihdr))
        fh.write(_png_chunk(b"IDAT", zlib.compress(raw, 6)))
        fh.write(_png_chunk(b"IEND", b""))


def _unfilter(filtered: np.ndarray, ftypes: np.ndarray, bpp: int) -> np.ndarray:
    """Undo the PNG row filters: ``filtered`` uint8 ``[H, W, bpp]``, ``ftypes`` ``[H]``.

    Sub, Average and Paeth depend on the reconstructed left, upper and upper-left pixels, so
    the pixels are reconstructed along anti-diagonals ``x + y = d`` (each one depends only on
    the two before), vectorised over the rows.
    """
    h, w, _ = filtered.shape
    if not ftypes.any():
        return filtered
    f = filtered.astype(np.int32)
    r = np.zeros((h + 1, w + 1, bpp), np.int32)  # reconstructed, padded with a zero row and column
    t_all = ftypes.astype(np.int32)
    for d in range(h + w - 1):
        ys = np.arange(max(0, d - w + 1), min(h, d + 1))
        xs = d - ys
        a, b, c = r[ys + 1, xs], r[ys, xs + 1], r[ys, xs]  # left, up, upper-left
        t = t_all[ys][:, None]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([t == 1, t == 2, t == 3, t == 4], [a, b, (a + b) >> 1, paeth], 0)
        r[ys + 1, xs + 1] = (f[ys, xs] + pred) & 0xFF
    return r[1:, 1:].astype(np.uint8)


def read_png16_rgb(path) -> np.ndarray:
    """Read a 16-bit RGB PNG (non-interlaced): uint16 ``[H, W, 3]``."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise FlowFileError(f"{path}: not a PNG file (no PNG signature); KITTI flow files are 16-bit RGB PNGs")
    pos, header, idat = len(_PNG_SIGNATURE), None, []
    while pos + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise FlowFileError(f"{path}: truncated PNG (chunk {kind!r} needs {length} bytes)")
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if crc != zlib.crc32(kind + body):
            raise FlowFileError(f"{path}: damaged PNG: CRC mismatch in chunk {kind!r}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    else:
        raise FlowFileError(f"{path}: truncated PNG (no IEND chunk)")
    if header is None or not idat:
        raise FlowFileError(f"{path}: damaged PNG (no IHDR or no IDAT chunk)")
    w, h, depth, color, _, _, interlace = header
    if w == 0 or h == 0:
        raise FlowFileError(f"{path}: damaged PNG: empty image {w}x{h}")
    if depth != 16 or color != 2:
        raise FlowFileError(
            f"{path}: a KITTI flow PNG is 16-bit RGB, this one is {depth}-bit "
            f"{_COLOR_TYPES.get(color, f'color type {color}')}. Is it an image rather than a flow "
            "file (flow is in flow_occ/ or flow_noc/, images in image_2/)? A flow saved as 8-bit "
            "has lost its precision: write it again with write_kitti_flow (or cv2.imwrite of a "
            "uint16 array, channels B, G, R = valid, v, u)."
        )
    if interlace != 0:
        raise FlowFileError(f"{path}: interlaced PNGs are not supported; save it without interlacing")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise FlowFileError(f"{path}: damaged PNG image data ({e})") from None
    stride = 1 + 6 * w
    if len(raw) != h * stride:
        raise FlowFileError(f"{path}: truncated PNG image data: expected {h * stride} bytes, got {len(raw)}")
    rows = np.frombuffer(raw, np.uint8).reshape(h, stride)
    ftypes = rows[:, 0]
    if (ftypes > 4).any():
        raise FlowFileError(f"{path}: damaged PNG: unknown row filter type {int(ftypes.max())}")
    pixels = _unfilter(rows[:, 1:].reshape(h, w, 6), ftypes, 6)
    return np.ascontiguousarray(pixels).view(">u2").reshape(h, w, 3).astype(np.uint16)


def read_kitti_flow(path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a KITTI flow PNG: ``(flow float32 [2, H, W], valid bool [H, W])``.

    Invalid pixels get flow 0 (the file stores 0 there, which would decode as -512 px).
    """
    a = read_png16_rgb(path).astype(np.float32)
    valid = a[..., 2] > 0
    flow = (a[..., :2] - KITTI_OFFSET) / KITTI_SCALE
    flow[~valid] = 0
    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1))), torch.from_numpy(valid)


def write_kitti_flow(path, flow, valid=None) -> None:
    """Write a flow ``[2, H, W]`` as a KITTI 16-bit PNG (as the devkit: rounded to 1/64 px,
    clipped to +-512 px; invalid pixels stored as 0 in all three channels). ``valid``
    defaults to the pixels with known flow."""
    f = _flow_chw_numpy(flow).astype(np.float64)
    ok = np.isfinite(f).all(0) & (np.abs(f) < UNKNOWN_FLOW).all(0)
    if valid is not None:
        v = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)
        if v.shape != ok.shape:
            raise ValueError(f"valid: expected shape {ok.shape}, got {v.shape}")
        ok &= v.astype(bool)
    q = np.clip(np.round(np.where(ok, f, 0) * KITTI_SCALE) + KITTI_OFFSET, 0, 65535)
    out = np.zeros(f.shape[1:] + (3,), np.uint16)
    out[..., 0] = np.where(ok, q[0], 0)
    out[..., 1] = np.where(ok, q[1], 0)
    out[..., 2] = ok
    write_png16_rgb(path, out)


# --------------------------------------------------------------------------------------------
# .pfm and dispatch
# --------------------------------------------------------------------------------------------


def read_pfm(path) -> torch.Tensor:
    """Read a 3-channel ``.pfm`` flow (FlyingThings3D style; the third channel is dropped)."""
    path = Path(path)
    data = path.read_bytes()
    m = re.match(rb"(P[Ff])\s+(\d+)\s+(\d+)\s+(\S+)\s", data)
    if m is None:
        raise FlowFileError(f"{path}: not a PFM file (expected a 'PF' header, width, height, scale)")
    kind, w, h, scale = m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4))
    if kind != b"PF":
        raise FlowFileError(f"{path}: a single-channel PFM ('Pf', e.g. disparity) is not a flow")
    need = w * h * 3 * 4
    body = data[m.end() :]
    if len(body) < need:
        raise FlowFileError(f"{path}: truncated: {w}x{h}x3 float32 needs {need} bytes, got {len(body)}")
    a = np.frombuffer(body[:need], "<f4" if scale < 0 else ">f4").reshape(h, w, 3)[::-1]
    return torch.from_numpy(np.ascontiguousarray(a[..., :2].transpose(2, 0, 1), dtype=np.float32))


_READERS = {".flo": "read_flo", ".png": "read_kitti_flow", ".pfm": "read_pfm"}


def read_flow(path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a flow file by extension: ``(flow float32 [2, H, W], valid bool [H, W])``.

    ``.flo`` (Middlebury/Sintel), ``.png`` (KITTI 16-bit) and ``.pfm``; for the dense
    formats ``valid`` marks the pixels with known flow.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _READERS:
        raise FlowFileError(
            f"{path}: unknown flow file extension {ext!r}; supported: {', '.join(_READERS)}"
        )
    if ext == ".png":
        return read_kitti_flow(path)
    flow = read_flo(path) if ext == ".flo" else read_pfm(path)
    valid = _known(flow)
    return torch.where(valid, flow, torch.zeros_like(flow)), valid


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs Pillow: pip install pillow") from None
    return Image


def _read_image(path: Path) -> torch.Tensor:
    with _pil().open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


class FlowFolder(torch.utils.data.Dataset):
    """Image pairs with ground-truth flow in the Sintel or the KITTI 2015 layout.

    * Sintel: ``root/<split>/<pass>/<scene>/frame_XXXX.png`` and
      ``root/<split>/flow/<scene>/frame_XXXX.flo`` (the flow from frame i to frame i + 1),
      ``sintel_pass`` ``"clean"`` or ``"final"``.
    * KITTI 2015: ``root/<split>/image_2/XXXXXX_10.png``, ``XXXXXX_11.png`` and
      ``root/<split>/flow_occ/XXXXXX_10.png`` (``kitti_flow="noc"``: ``flow_noc``). KITTI
      2012's ``colored_0`` image folder is used when there is no ``image_2``.

    ``layout="auto"`` picks the layout whose flow folder exists. Items:
    ``(img1 [3, H, W] float in [0, 1], img2, flow [2, H, W] float32, valid [H, W] bool)``;
    ``self.pairs`` lists the ``(img1, img2, flow)`` paths.
    """

    def __init__(
        self,
        root,
        layout: Literal["sintel", "kitti", "auto"] = "auto",
        split: str = "training",
        sintel_pass: Literal["clean", "final"] = "clean",
        kitti_flow: Literal["occ", "noc"] = "occ",
    ) -> None:
        self.root = Path(root)
        base = self.root / split
        if not self.root.is_dir():
            raise FileNotFoundError(f"FlowFolder: root {self.root} does not exist or is not a directory")
        sintel_dir, kitti_dir = base / "flow", base / f"flow_{kitti_flow}"
        expected = (
            f"Sintel: {sintel_dir}/<scene>/frame_XXXX.flo with {base}/{sintel_pass}/<scene>/frame_XXXX.png; "
            f"KITTI: {kitti_dir}/XXXXXX_10.png with {base}/image_2/XXXXXX_10.png and XXXXXX_11.png"
        )
        if layout == "auto":
            candidates: tuple[tuple[Literal["sintel", "kitti"], Path], ...] = (
                ("sintel", sintel_dir),
                ("kitti", kitti_dir),
            )
            found = [n for n, d in candidates if d.is_dir()]
            if len(found) != 1:
                what = "both" if found else "neither"
                raise FileNotFoundError(
                    f"FlowFolder: cannot tell the layout of {self.root}: found {what} of the flow folders "
                    f"expected ({expected}); pass layout='sintel' or 'kitti'"
                )
            layout = found[0]
        if layout == "sintel":
            self.pairs = self._sintel(base, sintel_dir, base / sintel_pass)
        elif layout == "kitti":
            self.pairs = self._kitti(base, kitti_dir)
        else:
            raise ValueError(f"layout: expected 'sintel', 'kitti' or 'auto', got {layout!r}")
        self.layout = layout
        if not self.pairs:
            raise FileNotFoundError(
                f"FlowFolder: no {layout} image pairs with flow under {base}; expected {expected}"
            )

    @staticmethod
    def _sintel(base: Path, flow_dir: Path, image_dir: Path) -> list[tuple[Path, Path, Path]]:
        if not flow_dir.is_dir() or not image_dir.is_dir():
            return []
        pairs = []
        for flow in sorted(flow_dir.glob("*/frame_*.flo")):
            m = re.fullmatch(r"frame_(\d+)", flow.stem)
            if m is None:
                continue
            i, width = int(m.group(1)), len(m.group(1))
            scene = image_dir / flow.parent.name
            img1, img2 = scene / f"frame_{i:0{width}d}.png", scene / f"frame_{i + 1:0{width}d}.png"
            for img in (img1, img2):
                if not img.is_file():
                    raise FileNotFoundError(f"FlowFolder: {flow} has no image {img}")
            pairs.append((img1, img2, flow))
        return pairs

    @staticmethod
    def _kitti(base: Path, flow_dir: Path) -> list[tuple[Path, Path, Path]]:
        image_dir = base / "image_2"
        if not image_dir.is_dir():
            image_dir = base / "colored_0"
        if not flow_dir.is_dir():
            return []
        pairs = []
        for flow in sorted(flow_dir.glob("*_10.png")):
            stem = flow.name[: -len("_10.png")]
            img1, img2 = image_dir / f"{stem}_10.png", image_dir / f"{stem}_11.png"
            for img in (img1, img2):
                if not img.is_file():
                    raise FileNotFoundError(f"FlowFolder: {flow} has no image {img}")
            pairs.append((img1, img2, flow))
        return pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        img1, img2, flow_path = self.pairs[i]
        flow, valid = read_flow(flow_path)
        return _read_image(img1), _read_image(img2), flow, valid
