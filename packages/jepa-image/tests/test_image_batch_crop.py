"""The batched random-resized crop equals per-image crop + bilinear resize, and samples crops by
torchvision's RandomResizedCrop rule."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jepa_image.data import BatchRandomResizedCrop


def test_batch_crop_equals_per_image_crop_and_resize():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g)
    tf = BatchRandomResizedCrop(28, (0.3, 1.0), mean=(0.5,), std=(0.25,))
    out = tf(images, torch.Generator().manual_seed(1))
    boxes = tf.boxes(64, 28, 28, torch.Generator().manual_seed(1)).long()
    assert out.shape == (64, 1, 28, 28)
    for b in range(64):
        top, left, h, w = boxes[b].tolist()
        crop = images[b : b + 1, :, top : top + h, left : left + w].float() / 255
        ref = F.interpolate(crop, size=(28, 28), mode="bilinear", align_corners=False)
        ref = (ref - 0.5) / 0.25
        torch.testing.assert_close(out[b : b + 1], ref, atol=1e-4, rtol=1e-4)


def test_crop_parameters_follow_the_random_resized_crop_rule():
    tf = BatchRandomResizedCrop(28, (0.3, 1.0))
    boxes = tf.boxes(20000, 28, 28, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 28).all()
    area = h * w / 28**2
    # Rounding of h and w moves the area a little outside [0.3, 1].
    assert area.min() > 0.25 and area.max() <= 1.0
    assert 0.55 < area.mean() < 0.75  # E[U(0.3, 1)] = 0.65, less the rejected large crops
    ratio = w / h
    assert ratio.min() >= 0.6 and ratio.max() <= 1.7
    # log-uniform aspect: about half the crops are wider than tall among non-square ones
    wide = (ratio > 1).float().mean()
    tall = (ratio < 1).float().mean()
    assert abs(wide - tall) < 0.05
    # positions cover the whole allowed range (inclusive upper bound)
    assert int((top == 28 - h).sum()) > 0 and int((left == 28 - w).sum()) > 0


def test_same_generator_seed_same_crops_and_fallback_is_centred():
    tf = BatchRandomResizedCrop(8, (0.3, 1.0))
    a = tf.boxes(16, 28, 28, torch.Generator().manual_seed(3))
    b = tf.boxes(16, 28, 28, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # A scale no crop can satisfy (area > image) forces the centre-crop fallback.
    tf_big = BatchRandomResizedCrop(8, (2.0, 3.0))
    top, left, h, w = tf_big.boxes(4, 20, 40, torch.Generator().manual_seed(0)).unbind(1)
    # W/H = 2 > 4/3: full height, width = round(20 * 4/3) = 27, centred.
    assert h.tolist() == [20] * 4 and w.tolist() == [round(20 * 4 / 3)] * 4
    assert top.tolist() == [0] * 4 and left.tolist() == [(40 - 27) // 2] * 4
    assert math.isclose(27 / 20, 1.35)


def test_slots_take_the_crops_of_the_global_batch():
    """With ``slots`` the crops are drawn for ``total`` samples and each image takes its slot's
    crop: two processes crop exactly like one process with the whole batch (issue #13)."""
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    tf = BatchRandomResizedCrop(28, (0.3, 1.0))
    full = tf(images, torch.Generator().manual_seed(4))
    for slots in (torch.tensor([0, 2, 4, 6]), torch.tensor([1, 3, 5, 7]), torch.tensor([5, 1])):
        part = tf(images[slots], torch.Generator().manual_seed(4), slots=slots, total=8)
        torch.testing.assert_close(part, full[slots], atol=0, rtol=0)
    # without slots a sub-batch draws its own crops
    assert not torch.equal(tf(images[:4], torch.Generator().manual_seed(4)), full[4:])
