"""High bit-depth images are scaled to 8 bits, not clipped (issue #13 item 8: 16-bit PNGs came
out 99.7 % white)."""

from __future__ import annotations

import numpy as np
import pytest
from jepa_image.data import ImageFolder, to_rgb8
from PIL import Image

pytestmark = pytest.mark.fault


def _folder(tmp_path, array: np.ndarray, name: str = "a.png"):
    d = tmp_path / "train" / "c"
    d.mkdir(parents=True)
    Image.fromarray(array).save(d / name)
    return ImageFolder(tmp_path, "train")


def test_16_bit_png_is_scaled_to_the_full_8_bit_range(tmp_path):
    ramp = (np.arange(256 * 256, dtype=np.uint32).reshape(256, 256)).astype(np.uint16)  # 0 .. 65535
    img, label = _folder(tmp_path, ramp)[0]
    assert label == 0 and img.mode == "RGB"
    out = np.asarray(img)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()  # gray stays gray
    expect = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(out[..., 0], expect)
    assert out.min() == 0 and out.max() == 255
    assert (out == 255).mean() < 0.01  # PIL's convert("RGB") clips: 99.6 % of these pixels at 255
    assert abs(out.mean() - 127.5) < 0.5


def test_8_bit_and_float_modes():
    gray = np.array([[0, 128, 255]], dtype=np.uint8)
    assert np.asarray(to_rgb8(Image.fromarray(gray)))[0, :, 0].tolist() == [0, 128, 255]
    rgb = np.array([[[10, 20, 30]]], dtype=np.uint8)
    assert np.asarray(to_rgb8(Image.fromarray(rgb))).tolist() == [[[10, 20, 30]]]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))  # mode F in [0, 1]
    assert np.asarray(to_rgb8(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32))  # F in [0, 255], clipped
    assert np.asarray(to_rgb8(wide))[0, :, 0].tolist() == [0, 100, 255]
    i32 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32))  # mode I, the 16-bit range
    assert np.asarray(to_rgb8(i32))[0, :, 0].tolist() == [0, 128, 255]
