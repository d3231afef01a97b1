"""jepa_eval.flow: flow metrics, colour coding, .flo / KITTI PNG / PFM files, FlowFolder."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from jepa_eval.flow import (
    FLO_MAGIC,
    FlowFileError,
    FlowFolder,
    FlowMetricAccumulator,
    endpoint_error,
    flow_metrics,
    flow_to_color,
    make_colorwheel,
    mean_flow,
    mean_flow_baseline,
    plot_flows,
    read_flo,
    read_flow,
    read_kitti_flow,
    read_png16_rgb,
    write_flo,
    write_kitti_flow,
    zero_flow_baseline,
)

Image = pytest.importorskip("PIL.Image")


def _flow(*shape, seed=0, scale=5.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# ---------------------------------------------------------------------------------- metrics


def test_epe_of_true_flow_is_zero():
    gt = _flow(2, 2, 5, 7)
    epe = endpoint_error(gt.clone(), gt)
    assert epe.shape == (2, 5, 7)
    assert torch.equal(epe, torch.zeros_like(epe))
    assert flow_metrics(gt, gt)["epe"] == 0.0


def test_constant_error_3_4_gives_epe_5_everywhere():
    gt = _flow(2, 6, 4)
    pred = gt + torch.tensor([3.0, 4.0]).view(2, 1, 1)
    epe = endpoint_error(pred, gt)
    assert epe.shape == (6, 4)
    torch.testing.assert_close(epe, torch.full((6, 4), 5.0))
    m = flow_metrics(pred, gt)
    assert m["epe"] == pytest.approx(5.0)
    assert m["px1"] == 0.0 and m["px3"] == 0.0 and m["px5"] == 0.0  # 5 is not < 5
    assert m["n_pixels"] == 24


def test_invalid_pixels_are_nan_and_left_out():
    gt = torch.zeros(2, 1, 3)
    pred = torch.tensor([[[1.0, 100.0, 2.0]], [[0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, False, True]])
    epe = endpoint_error(pred, gt, valid)
    assert torch.isnan(epe[0, 1]) and epe[0, 0] == 1.0 and epe[0, 2] == 2.0
    assert flow_metrics(pred, gt, valid)["epe"] == pytest.approx(1.5)
    # Middlebury's unknown flow (>= 1e9) in the ground truth is never valid.
    gt_unknown = gt.clone()
    gt_unknown[:, 0, 1] = 1e10
    assert flow_metrics(pred, gt_unknown)["epe"] == pytest.approx(1.5)


def test_fl_all_and_px_thresholds_hand_computed():
    # One row of five pixels; ground truth and error per pixel:
    #   a: gt (100, 0), error 4   -> 4 > 3 but 4 <= 5 % of 100 = 5  -> inlier
    #   b: gt (100, 0), error 6   -> 6 > 3 and 6 > 5                 -> outlier
    #   c: gt (0, 0),   error 3.5 -> 3.5 > 3 and 3.5 > 0             -> outlier
    #   d: gt (10, 0),  error 2   -> 2 <= 3                          -> inlier
    #   e: invalid, error 50 (ignored)
    gt = torch.tensor([[[100.0, 100.0, 0.0, 10.0, 0.0]], [[0.0, 0.0, 0.0, 0.0, 0.0]]])
    err = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 50.0]], [[4.0, 6.0, 3.5, 2.0, 0.0]]])
    valid = torch.tensor([[True, True, True, True, False]])
    m = flow_metrics(gt + err, gt, valid)
    assert m["n_pixels"] == 4
    assert m["fl_all"] == pytest.approx(50.0)  # 2 of 4, in percent
    assert m["epe"] == pytest.approx((4 + 6 + 3.5 + 2) / 4)
    assert m["px1"] == 0.0
    assert m["px3"] == pytest.approx(0.25)  # 2
    assert m["px5"] == pytest.approx(0.75)  # 4, 3.5, 2


def test_occluded_and_non_occluded_split():
    gt = torch.zeros(1, 2, 2, 2)
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 10.0]])  # EPE per pixel
    occluded = torch.tensor([[[False, True], [True, False]]])
    valid = torch.tensor([[[True, True, ], [True, False]]])  # the 10 is not valid
    m = flow_metrics(pred, gt, valid, occluded)
    assert m["epe"] == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    assert m["epe_noc"] == pytest.approx(1.0)  # only pixel (0, 0)
    assert m["epe_occ"] == pytest.approx(2.5)  # (2 + 3) / 2
    none_occluded = flow_metrics(pred, gt, valid, torch.zeros_like(occluded))
    assert none_occluded["epe_occ"] is None
    assert none_occluded["epe_noc"] == pytest.approx(2.0)
    no_mask = flow_metrics(pred, gt, valid)
    assert no_mask["epe_noc"] is None and no_mask["epe_occ"] is None
    nothing_valid = flow_metrics(pred, gt, torch.zeros_like(valid))
    assert nothing_valid["epe"] is None and nothing_valid["fl_all"] is None and nothing_valid["n_pixels"] == 0


def test_accumulator_equals_metrics_of_concatenation():
    gt1, gt2 = _flow(2, 2, 4, 5, seed=1), _flow(3, 2, 4, 5, seed=2)
    pred1, pred2 = gt1 + _flow(2, 2, 4, 5, seed=3, scale=3), gt2 + _flow(3, 2, 4, 5, seed=4, scale=1)
    v1 = torch.zeros(2, 4, 5, dtype=torch.bool)
    v1[:, :1] = True  # few valid pixels in the first batch
    v2 = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(5)) > 0.2
    o1 = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(6)) > 0.5
    o2 = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(7)) > 0.5
    acc = FlowMetricAccumulator()
    acc.update(pred1, gt1, v1, o1)
    acc.update(pred2, gt2, v2, o2)
    got = acc.compute()
    want = flow_metrics(torch.cat([pred1, pred2]), torch.cat([gt1, gt2]), torch.cat([v1, v2]), torch.cat([o1, o2]))
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6), k
    # ... which is not the mean of the per-batch means (the batches have unequal valid counts).
    per_batch = [flow_metrics(pred1, gt1, v1)["epe"], flow_metrics(pred2, gt2, v2)["epe"]]
    assert got["epe"] != pytest.approx(sum(per_batch) / 2, rel=1e-3)
    with pytest.raises(ValueError, match="occluded"):
        acc.update(pred1, gt1, v1)  # the noc/occ split would cover only part of the data
    acc.reset()
    assert acc.compute()["epe"] is None


def test_zero_and_mean_flow_baselines():
    gt = torch.zeros(2, 2, 3, 4)
    gt[:, 0] = 3.0
    gt[:, 1] = 4.0
    gt[1, :, 0, 0] = torch.tensor([6.0, 8.0])
    valid = torch.ones(2, 3, 4, dtype=torch.bool)
    data = [(gt[:1], valid[:1]), (gt[1:], valid[1:])]
    zero = zero_flow_baseline(data)
    assert zero["epe"] == pytest.approx((23 * 5 + 10) / 24)
    train_mean = mean_flow([gt])
    torch.testing.assert_close(train_mean, torch.tensor([(23 * 3 + 6) / 24, (23 * 4 + 8) / 24]))
    exact = mean_flow_baseline(data, torch.tensor([3.0, 4.0]))
    assert exact["epe"] == pytest.approx(5 / 24)  # only the (6, 8) pixel is off, by 5
    assert exact["fl_all"] == pytest.approx(100 / 24)
    # FlowFolder-style items (img1, img2, flow, valid) work as well.
    img = torch.zeros(2, 3, 3, 4)
    assert zero_flow_baseline([(img, img, gt, valid)])["epe"] == pytest.approx(zero["epe"])


# ------------------------------------------------------------------------------ colour code


def test_colorwheel_has_55_middlebury_colours():
    wheel = make_colorwheel()
    assert wheel.shape == (55, 3)
    np.testing.assert_array_equal(wheel[0], [255, 0, 0])  # red
    np.testing.assert_array_equal(wheel[15], [255, 255, 0])  # yellow
    np.testing.assert_array_equal(wheel[21], [0, 255, 0])  # green
    np.testing.assert_array_equal(wheel[25], [0, 255, 255])  # cyan
    np.testing.assert_array_equal(wheel[36], [0, 0, 255])  # blue
    np.testing.assert_array_equal(wheel[49], [255, 0, 255])  # magenta


def test_flow_to_color():
    flow = torch.zeros(2, 3, 4)
    flow[0, 0, 0] = 2.0  # right
    flow[0, 0, 1] = -2.0  # left
    flow[1, 0, 2] = 2.0  # down
    flow[0, 0, 3] = 1.0  # right, half the largest magnitude
    img = flow_to_color(flow)
    assert img.dtype == np.uint8 and img.shape == (3, 4, 3)
    np.testing.assert_array_equal(img[1:], 255)  # zero flow: the wheel's white centre
    right, left, down = img[0, 0].astype(int), img[0, 1].astype(int), img[0, 2].astype(int)
    assert np.abs(right - left).max() > 100 and np.abs(right - down).max() > 100
    np.testing.assert_array_equal(right, [255, 0, 0])  # full saturation at the largest magnitude
    assert right.argmax() == 0 and left.argmax() == 2  # red vs cyan-blue
    np.testing.assert_array_equal(img[0, 3], [255, 127, 127])  # half saturated
    # A fixed max_flow: a flow beyond it is darkened, invalid pixels are black.
    dark = flow_to_color(flow, max_flow=1.0, valid=torch.tensor([[True] * 3 + [False]] + [[True] * 4] * 2))
    np.testing.assert_array_equal(dark[0, 0], [191, 0, 0])
    np.testing.assert_array_equal(dark[0, 3], 0)


def test_plot_flows_writes_png(tmp_path):
    gt = _flow(1, 2, 8, 10)
    path = plot_flows(torch.rand(1, 3, 8, 10), gt, gt + 1, tmp_path / "plots" / "flows.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100


# ------------------------------------------------------------------------------------- .flo


def test_flo_round_trip_bit_exact(tmp_path):
    flow = _flow(2, 3, 5, seed=9)
    flow[0, 0, 0] = float("inf")
    path = tmp_path / "a.flo"
    write_flo(path, flow)
    data = path.read_bytes()
    assert len(data) == 12 + 3 * 5 * 8
    assert struct.unpack("<fii", data[:12]) == (FLO_MAGIC, 5, 3)  # width, then height
    assert data[:4] == b"PIEH"
    # interleaved (u, v) in row-major order
    assert struct.unpack("<4f", data[12:28]) == tuple(float(x) for x in (flow[0, 0, 0], flow[1, 0, 0], flow[0, 0, 1], flow[1, 0, 1]))
    back = read_flo(path)
    assert back.dtype == torch.float32 and back.shape == (2, 3, 5)
    assert back.numpy().tobytes() == flow.numpy().tobytes()
    f2, valid = read_flow(path)
    assert not valid[0, 0] and valid.sum() == 14 and f2[0, 0, 0] == 0


def test_flo_wrong_magic_and_truncated(tmp_path):
    path = tmp_path / "bad.flo"
    write_flo(path, _flow(2, 3, 5))
    good = path.read_bytes()
    path.write_bytes(struct.pack("<f", 1.0) + good[4:])
    with pytest.raises(FlowFileError, match=r"bad\.flo.*magic"):
        read_flo(path)
    path.write_bytes(good[:-7])
    with pytest.raises(FlowFileError, match=r"bad\.flo: truncated.*132 bytes.*file has 125"):
        read_flo(path)
    path.write_bytes(good[:6])
    with pytest.raises(FlowFileError, match="header"):
        read_flo(path)
    assert issubclass(FlowFileError, ValueError)


# ------------------------------------------------------------------------------ KITTI PNG


def test_kitti_png_round_trip(tmp_path):
    g = torch.Generator().manual_seed(3)
    flow = torch.randint(-300 * 64, 300 * 64, (2, 4, 7), generator=g).float() / 64  # exact at 1/64 px
    valid = torch.rand(4, 7, generator=g) > 0.3
    path = tmp_path / "000000_10.png"
    write_kitti_flow(path, flow, valid)
    back, back_valid = read_kitti_flow(path)
    assert back.dtype == torch.float32 and back.shape == (2, 4, 7)
    assert torch.equal(back_valid, valid)
    assert torch.equal(back[:, valid], flow[:, valid])
    assert torch.equal(back[:, ~valid], torch.zeros_like(back[:, ~valid]))
    # Pillow reads the file (checks structure and CRCs), though only the high byte of each sample.
    with Image.open(path) as im:
        assert im.size == (7, 4)
        hi = np.asarray(im.convert("RGB"))
    want_u = np.where(valid.numpy(), (flow[0].numpy() * 64 + 2**15).astype(np.int64), 0)
    np.testing.assert_array_equal(hi[..., 0], want_u >> 8)
    np.testing.assert_array_equal(hi[..., 2], 0)  # valid = 1 -> high byte 0
    f2, v2 = read_flow(path)
    assert torch.equal(f2, back) and torch.equal(v2, back_valid)


def _png16_with_filters(a: np.ndarray, filters: list[int]) -> bytes:
    """An independent 16-bit RGB PNG encoder applying the given filter type to each row."""
    h, w, _ = a.shape
    rows = [list(a[y].astype(">u2").tobytes()) for y in range(h)]
    bpp, out = 6, b""
    for y, ft in enumerate(filters):
        cur, prev = rows[y], rows[y - 1] if y else [0] * len(rows[0])
        enc = []
        for x, byte in enumerate(cur):
            left = cur[x - bpp] if x >= bpp else 0
            up, ul = prev[x], prev[x - bpp] if x >= bpp else 0
            if ft == 0:
                pred = 0
            elif ft == 1:
                pred = left
            elif ft == 2:
                pred = up
            elif ft == 3:
                pred = (left + up) // 2
            else:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
            enc.append((byte - pred) % 256)
        out += bytes([ft] + enc)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(out)) + chunk(b"IEND", b"")


def test_png_reader_undoes_all_row_filters(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, (7, 5, 3)).astype(np.uint16)
    a[3:] = a[3:] // 64 + 32000  # smoother rows, where the predictors matter
    path = tmp_path / "filtered.png"
    path.write_bytes(_png16_with_filters(a, [0, 1, 2, 3, 4, 4, 3]))
    np.testing.assert_array_equal(read_png16_rgb(path), a)
    path.write_bytes(_png16_with_filters(a, [4, 3, 1, 2, 1, 0, 2]))
    np.testing.assert_array_equal(read_png16_rgb(path), a)


def test_kitti_reader_rejects_non_png_and_8_bit(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"GIF89a not a png")
    with pytest.raises(FlowFileError, match="not a PNG"):
        read_kitti_flow(path)
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(path)
    with pytest.raises(FlowFileError, match=r"16-bit RGB, this one is 8-bit RGB.*write_kitti_flow"):
        read_kitti_flow(path)
    write_kitti_flow(path, torch.zeros(2, 3, 4))
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # inside the IDAT chunk
    path.write_bytes(bytes(data))
    with pytest.raises(FlowFileError, match="CRC"):
        read_kitti_flow(path)


def test_read_flow_dispatch_and_pfm(tmp_path):
    with pytest.raises(FlowFileError, match=r"unknown flow file extension '\.npy'.*\.flo.*\.png.*\.pfm"):
        read_flow(tmp_path / "a.npy")
    # A 3-channel little-endian PFM, rows stored bottom to top.
    h, w = 2, 3
    uvw = np.arange(h * w * 3, dtype="<f4").reshape(h, w, 3)
    path = tmp_path / "a.pfm"
    path.write_bytes(f"PF\n{w} {h}\n-1.0\n".encode() + uvw[::-1].tobytes())
    flow, valid = read_flow(path)
    np.testing.assert_array_equal(flow.numpy(), uvw[..., :2].transpose(2, 0, 1))
    assert valid.all()


# ------------------------------------------------------------------------------ FlowFolder


def _save_rgb(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(path)


def test_flow_folder_sintel(tmp_path):
    root = tmp_path / "sintel"
    flows = {}
    for scene, n in (("alley_1", 3), ("bamboo_2", 2)):
        for i in range(1, n + 1):
            _save_rgb(root / "training" / "clean" / scene / f"frame_{i:04d}.png", 10 * i)
            _save_rgb(root / "training" / "final" / scene / f"frame_{i:04d}.png", 200)
        for i in range(1, n):
            f = root / "training" / "flow" / scene / f"frame_{i:04d}.flo"
            f.parent.mkdir(parents=True, exist_ok=True)
            flows[(scene, i)] = _flow(2, 4, 6, seed=i)
            write_flo(f, flows[(scene, i)])
    ds = FlowFolder(root)
    assert ds.layout == "sintel" and len(ds) == 3
    img1, img2, flow, valid = ds[1]  # alley_1, frames 2 -> 3
    assert img1.shape == (3, 4, 6) and img1.dtype == torch.float32
    torch.testing.assert_close(img1, torch.full((3, 4, 6), 20 / 255))
    torch.testing.assert_close(img2, torch.full((3, 4, 6), 30 / 255))
    assert torch.equal(flow, flows[("alley_1", 2)]) and valid.dtype == torch.bool and valid.all()
    assert ds.pairs[2][0].parent.name == "bamboo_2"
    final = FlowFolder(root, layout="sintel", sintel_pass="final")
    assert final[0][0].max() == pytest.approx(200 / 255)


def test_flow_folder_kitti(tmp_path):
    root = tmp_path / "kitti"
    valid = torch.zeros(4, 6, dtype=torch.bool)
    valid[1:3] = True
    for k in range(2):
        _save_rgb(root / "training" / "image_2" / f"{k:06d}_10.png", 50 + k)
        _save_rgb(root / "training" / "image_2" / f"{k:06d}_11.png", 100 + k)
        (root / "training" / "flow_occ").mkdir(parents=True, exist_ok=True)
        write_kitti_flow(root / "training" / "flow_occ" / f"{k:06d}_10.png", torch.full((2, 4, 6), 1.5 + k), valid)
    ds = FlowFolder(root, layout="auto")
    assert ds.layout == "kitti" and len(ds) == 2
    img1, img2, flow, v = ds[1]
    torch.testing.assert_close(img1, torch.full((3, 4, 6), 51 / 255))
    torch.testing.assert_close(img2, torch.full((3, 4, 6), 101 / 255))
    assert torch.equal(v, valid) and torch.equal(flow[:, valid], torch.full((2, 12), 2.5))
    # The zero-flow baseline over the dataset: every valid pixel is off by |(1.5, 1.5)| or |(2.5, 2.5)|.
    assert zero_flow_baseline(ds)["epe"] == pytest.approx(2 * 2**0.5)


def test_flow_folder_missing_root_and_empty_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FlowFolder(tmp_path / "nowhere")
    (tmp_path / "empty" / "training").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"neither.*frame_XXXX\.flo.*flow_occ"):
        FlowFolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"no kitti image pairs.*image_2"):
        FlowFolder(tmp_path / "empty", layout="kitti")
    # A flow without its second image is a broken tree, not a smaller dataset.
    root = tmp_path / "broken"
    _save_rgb(root / "training" / "clean" / "s" / "frame_0001.png", 0)
    (root / "training" / "flow" / "s").mkdir(parents=True)
    write_flo(root / "training" / "flow" / "s" / "frame_0001.flo", torch.zeros(2, 4, 6))
    with pytest.raises(FileNotFoundError, match="frame_0002.png"):
        FlowFolder(root)
