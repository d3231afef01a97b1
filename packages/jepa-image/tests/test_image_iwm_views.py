"""IWM paired views: batched ops equal torchvision per sample, draws are seeded and
process-count invariant, the recorded parameters re-make both views, the action is as documented."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from jepa_core.config import ConfigError, validate
from jepa_image.data import BatchRandomResizedCrop
from jepa_image.iwm_views import (
    ACTION_DIM,
    ACTION_NAMES,
    IDENTITY_PARAMS,
    VIEW_PARAMS,
    IWMViewConfig,
    PairedViews,
    action_vector,
    apply_view,
    null_action,
    pair_transform,
    reapply,
    sample_view_params,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _reference(img: torch.Tensor, p: list[float], threshold: float) -> torch.Tensor:
    """One image [C, H, W] through torchvision's functional ops, in the documented order."""
    b, c, s, h, gray, sigma, sol = p
    C, H, W = img.shape
    out = TF.adjust_contrast(TF.adjust_brightness(img, b), c)
    out = TF.adjust_hue(TF.adjust_saturation(out, s), h)
    if gray:
        out = TF.rgb_to_grayscale(out, num_output_channels=C)
    if sigma > 0:
        k = [min(2 * math.ceil(3 * sigma) + 1, n if n % 2 else n - 1) for n in (W, H)]
        out = TF.gaussian_blur(out, k, [sigma, sigma])
    return TF.solarize(out, threshold) if sol else out


def _random_params(n: int, g: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, 7, generator=g)
    sigma = torch.tensor([0.0, 0.1, 0.5, 1.3, 2.0, 4.0])[torch.randint(0, 6, (n,), generator=g)]
    return torch.stack([u[:, 0] * 2, u[:, 1] * 2, u[:, 2] * 2, u[:, 3] - 0.5, (u[:, 4] < 0.5).float(),
                        sigma, (u[:, 6] < 0.5).float()], 1)


@pytest.mark.parametrize("channels", [3, 1])
def test_apply_view_matches_torchvision_per_sample(channels):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(24, channels, 17, 20, generator=g)
    images[:2] = images[:2].round()  # saturated pixels, flat (gray) pixels for hue
    images[2, :, :4] = 0.5
    params = _random_params(24, g)
    assert len({float(s) for s in params[:, 5]}) > 2  # mixed blur sigmas in one batch
    out = apply_view(images, params, IWMViewConfig(solarize_threshold=0.4))
    for i in range(24):
        ref = _reference(images[i], params[i].tolist(), 0.4)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_each_op_alone_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 12, 12, generator=g)
    for k, value in enumerate([1.7, 0.3, 0.0, 0.37, 1.0, 0.8, 1.0]):
        params = torch.tensor(IDENTITY_PARAMS).repeat(4, 1)
        params[1::2, k] = value  # rows 1, 3 take the op, rows 0, 2 stay as they are
        out = apply_view(images, params)
        torch.testing.assert_close(out[0::2], images[0::2], atol=0, rtol=0)
        for i in (1, 3):
            torch.testing.assert_close(out[i], _reference(images[i], params[i].tolist(), 0.5), atol=1e-5, rtol=0)
        assert not torch.allclose(out[1], images[1], atol=1e-3), VIEW_PARAMS[k]


def test_one_channel_saturation_hue_grayscale_are_identity():
    img = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(TF.adjust_saturation(img[0], 0.0), img[0]) and torch.equal(TF.adjust_hue(img[0], 0.3), img[0])
    assert torch.equal(apply_view(img, torch.tensor([[1.0, 1.0, 0.0, 0.3, 1.0, 0.0, 0.0]])), img)


def test_sampling_is_seeded_and_rows_do_not_depend_on_batch_size():
    cfg = IWMViewConfig()
    a = sample_view_params(cfg, 8, torch.Generator().manual_seed(5), source=True)
    b = sample_view_params(cfg, 16, torch.Generator().manual_seed(5), source=True)
    c = sample_view_params(cfg, 8, torch.Generator().manual_seed(6), source=True)
    torch.manual_seed(0)
    sample_view_params(cfg, 8, torch.Generator().manual_seed(5), source=True)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)  # the global RNG is not touched
    assert torch.equal(a, b[:8]) and not torch.equal(a, c)
    assert torch.equal(a, sample_view_params(cfg, 8, torch.Generator().manual_seed(5), source=True))


def test_sampled_params_have_the_configured_distribution():
    cfg = IWMViewConfig()
    n = 20000
    tgt = sample_view_params(cfg, n, torch.Generator().manual_seed(0), source=False)
    src = sample_view_params(cfg, n, torch.Generator().manual_seed(1), source=True)
    assert tgt.shape == (n, 7) and tgt.dtype == torch.float32
    assert torch.all(tgt[:, 4:] == 0)  # targets never get the destructive ops
    for p in (tgt, src):
        jittered = (p[:, :4] != torch.tensor(IDENTITY_PARAMS[:4])).any(1)
        assert abs(jittered.float().mean() - 0.8) < 0.02
        assert p[:, 0].min() >= 0.6 and p[:, 0].max() <= 1.4 and p[:, 2].min() >= 0.8 and p[:, 2].max() <= 1.2
        assert p[:, 3].abs().max() <= 0.1
    assert abs(src[:, 4].mean() - 0.2) < 0.02 and abs((src[:, 5] > 0).float().mean() - 0.2) < 0.02
    assert abs(src[:, 6].mean() - 0.1) < 0.02
    sig = src[src[:, 5] > 0, 5]
    assert sig.min() >= 0.1 and sig.max() <= 2.0
    assert set(src[:, 4].unique().tolist()) == {0.0, 1.0} and set(src[:, 6].unique().tolist()) == {0.0, 1.0}


def _batch(n=4, c=3, seed=0):
    return torch.randint(0, 256, (n, c, 40, 36), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_global_scope_slots_equal_rows_of_the_full_batch():
    tf = PairedViews(IWMViewConfig(), 24, MEAN, STD)
    images = _batch()
    full_x, full = tf(images, torch.Generator().manual_seed(3))
    part_x, part = tf(images[[1, 3]], torch.Generator().manual_seed(3), slots=torch.tensor([1, 3]), total=4)
    assert torch.equal(part_x, full_x[[1, 3]])
    for key, value in full.items():
        assert torch.equal(part[key], value[[1, 3]]), key
    assert full_x.shape == (4, 3, 24, 24) and full["crop_boxes"].shape == (4, 4) and full["flipped"].dtype == torch.bool
    other_x, _ = tf(images, torch.Generator().manual_seed(4))
    assert not torch.equal(other_x, full_x)


@pytest.mark.parametrize("mode", ["independent", "from_target"])
def test_recorded_crop_flip_and_params_remake_both_views(mode):
    cfg = IWMViewConfig(source=mode, grayscale_p=0.5, blur_p=0.5, solarize_p=0.5, hflip_p=0.5)
    tf = PairedViews(cfg, 24, MEAN, STD)
    images = _batch(16)
    x, f = tf(images, torch.Generator().manual_seed(7))
    shared = tf.shared_view(images, f["crop_boxes"], f["flipped"])
    y = reapply(shared, f["params_target"], cfg)
    x_again = reapply(shared if mode == "independent" else y, f["params_source"], cfg)
    assert torch.equal(tf.normalize(y), f["target_images"]) and torch.equal(tf.normalize(x_again), x)
    assert 0 < f["flipped"].sum() < 16 and (f["params_source"][:, 4:] > 0).any()
    # the recorded box and flip mean what they say: torchvision's crop + resize + flip
    for i in range(16):
        top, left, h, w = f["crop_boxes"][i].long().tolist()
        ref = TF.resized_crop(images[i].float() / 255, top, left, h, w, [24, 24], antialias=False)
        ref = TF.horizontal_flip(ref) if f["flipped"][i] else ref
        torch.testing.assert_close(shared[i], ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["independent", "from_target"])
def test_action_is_the_documented_difference_and_flags(mode):
    cfg = IWMViewConfig(source=mode, grayscale_p=0.5, blur_p=0.5, solarize_p=0.5)
    _, f = PairedViews(cfg, 16, MEAN, STD)(_batch(32), torch.Generator().manual_seed(1))
    s, t, a = f["params_source"], f["params_target"], f["action"]
    assert a.shape == (32, ACTION_DIM) and len(ACTION_NAMES) == ACTION_DIM == 7
    ref = t[:, :4] if mode == "independent" else torch.tensor([1.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(a[:, :4], ref - s[:, :4], atol=0, rtol=0)
    assert torch.equal(a[:, 4], s[:, 4]) and torch.equal(a[:, 5], (s[:, 5] > 0).float()) and torch.equal(a[:, 6], s[:, 6])
    assert torch.all(t[:, 4:] == 0) and set(a[:, 5].tolist()) == {0.0, 1.0}
    assert torch.equal(null_action(3), torch.zeros(3, 7))
    assert torch.equal(action_vector(s, s)[:, :4], torch.zeros(32, 4))
    with pytest.raises(ValueError, match="source mode"):
        action_vector(s, t, "sideways")


@pytest.mark.parametrize("channels", [3, 1])
def test_probability_zero_gives_the_cropped_normalised_input(channels):
    cfg = IWMViewConfig(hflip_p=0, jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0)
    mean, std = MEAN[:channels], STD[:channels]
    tf = PairedViews(cfg, 20, mean, std)
    images = _batch(6, channels)
    x, f = tf(images, torch.Generator().manual_seed(2))
    assert torch.equal(x, f["target_images"]) and not f["flipped"].any()
    assert torch.equal(f["params_source"], torch.tensor(IDENTITY_PARAMS).repeat(6, 1))
    assert torch.equal(f["action"], torch.zeros(6, 7))
    crop = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (3,), generator=torch.Generator().manual_seed(2))[0]))
    ref = BatchRandomResizedCrop(20, cfg.crop_scale, mean=mean, std=std)(images, crop)
    torch.testing.assert_close(x, ref, atol=1e-6, rtol=0)
    # crop=False: the input is the shared view already
    shared = torch.rand(6, channels, 20, 20, generator=torch.Generator().manual_seed(0))
    x2, f2 = PairedViews(cfg, 20, mean, std, crop=False)(shared, torch.Generator().manual_seed(0))
    assert torch.equal(x2, tf.normalize(shared)) and torch.equal(f2["target_images"], x2)


def test_crop_false_runs_only_the_photometric_part():
    cfg = IWMViewConfig(grayscale_p=0.5, blur_p=0.5)
    shared = pair_transform(24, (0.5, 1.0), 0.5)(_batch(1)[0])
    assert shared.dtype == torch.uint8 and shared.shape == (3, 24, 24)
    batch = torch.stack([shared, shared.flip(-1)])
    tf = PairedViews(cfg, 24, MEAN, STD, crop=False)
    x, f = tf(batch, torch.Generator().manual_seed(0))
    y = reapply(batch.float() / 255, f["params_target"], cfg)
    torch.testing.assert_close(f["target_images"], tf.normalize(y), atol=0, rtol=0)
    assert torch.equal(f["crop_boxes"][0], torch.tensor([0.0, 0.0, 24, 24], dtype=f["crop_boxes"].dtype))


@pytest.mark.parametrize("key,value", [
    ("jitter_p", 1.5), ("grayscale_p", -0.1), ("blur_p", 2.0), ("solarize_p", 1.01), ("hflip_p", -1.0),
    ("hue", 0.6), ("brightness", -0.1), ("blur_sigma", (0.0, 2.0)), ("blur_sigma", (2.0, 1.0)),
    ("crop_scale", (0.0, 1.0)), ("solarize_threshold", 1.5),
])
def test_bad_values_raise_config_error_naming_the_key(key, value):
    cfg = IWMViewConfig(**{key: value})
    with pytest.raises(ConfigError, match=rf"iwm\.{key}"):
        validate(cfg, "iwm")
    with pytest.raises(ConfigError, match=key):
        PairedViews(cfg, 16, MEAN, STD)


def test_unknown_source_raises_and_defaults_are_valid():
    validate(IWMViewConfig(), "iwm")
    with pytest.raises(ConfigError, match=r"iwm\.source must be one of"):
        validate(IWMViewConfig(source="sideways"), "iwm")


def test_blur_kernel_is_capped_on_small_images():
    img = torch.rand(2, 3, 5, 8, generator=torch.Generator().manual_seed(3))
    params = torch.tensor([[1, 1, 1, 0, 0, 4.0, 0], [1, 1, 1, 0, 0, 0.3, 0]])
    out = apply_view(img, params)
    ref = TF.gaussian_blur(img[0], [7, 5], [4.0, 4.0])  # 2*ceil(12)+1 = 25, capped to 7 (W=8) and 5 (H=5)
    torch.testing.assert_close(out[0], ref, atol=1e-5, rtol=0)
    assert F.mse_loss(out[1], TF.gaussian_blur(img[1], [3, 3], [0.3, 0.3])) < 1e-12


def test_mask_collator_two_processes_get_what_one_process_gets():
    from jepa_core.masks.collator import MaskCollator

    tf = PairedViews(IWMViewConfig(grayscale_p=0.5), 16, MEAN, STD)
    images = _batch(8)
    samples = [(images[i], i) for i in range(8)]
    one = MaskCollator(None, seed=3, batch_transform=tf)(samples)
    for rank in (0, 1):  # rank r holds global slots r, r + 2, ...
        part = MaskCollator(None, seed=3, rank=rank, world_size=2, batch_transform=tf)(samples[rank::2])
        for key in ("images", "target_images", "params_source", "params_target", "action", "crop_boxes", "flipped"):
            assert torch.equal(part[key], one[key][rank::2]), key
