"""S-JEPA's parts against known answers: motion-aware masking, the Multi-Axis Projection view,
the centred softmax cross-entropy and its running centre, the encoder's visible-only input,
the step-seeded draws, the presets."""

from __future__ import annotations

import math

import pytest
import torch
from jepa_core import registry
from jepa_core.config import ConfigError, validate
from jepa_core.masks import StepSeeds
from jepa_skeleton import sjepa
from jepa_skeleton.losses import CenteredCrossEntropy, centered_cross_entropy
from jepa_skeleton.masking import (
    SJEPASampler,
    gumbel_noise,
    motion_aware_masks,
    num_masked,
    token_motion,
)
from jepa_skeleton.nn import SkeletonEncoder, patchify, persons_as_samples
from jepa_skeleton.views import draw_views, project, rotate, rotation_matrices


def _tiny_cfg(**model) -> sjepa.SJEPAConfig:
    cfg = sjepa.SJEPAConfig()
    cfg.data.window = 16
    m = cfg.model
    m.embed_dim, m.depth, m.num_heads, m.pred_dim, m.pred_depth, m.pred_num_heads = 32, 2, 2, 32, 1, 2
    for k, v in model.items():
        setattr(m, k, v)
    return cfg


# ---------------------------------------------------------------------------------------------
# tokens and masking


def test_patchify_orders_token_values_frame_then_channel():
    x = torch.arange(2 * 3 * 8 * 5, dtype=torch.float32).view(2, 3, 8, 5)
    p = patchify(x, 4)  # [2, 2, 5, 12]
    assert p.shape == (2, 2, 5, 12)
    # token (t=1, joint 3) of sample 1: frames 4..7, each frame's 3 channels in turn
    expect = torch.stack([x[1, :, f, 3] for f in range(4, 8)]).flatten()
    assert torch.equal(p[1, 1, 3], expect)


def test_token_motion_is_the_mean_abs_difference_of_consecutive_tokens():
    x = torch.zeros(1, 3, 12, 2)
    x[0, 0, 4:8, 1] = 2.0  # joint 1, temporal token 1 moves to x = 2, token 2 back to 0
    motion = token_motion(x, 4).view(3, 2)  # time-major [T', V]
    # token 1 vs token 0 of joint 1: 4 of its 12 values differ by 2 -> 8 / 12; same for token 2 vs 1
    assert motion[1, 1] == pytest.approx(8 / 12) and motion[2, 1] == pytest.approx(8 / 12)
    assert motion[0, 1] == motion[1, 1]  # the first temporal token copies the second
    assert torch.all(motion[:, 0] == 0)


def test_motion_aware_masking_masks_high_motion_tokens_more_often():
    """Joint 0 moves, joints 1-4 stay still: over many draws its tokens are masked more often, and
    every sample has exactly round(N * 0.9) masked tokens."""
    t, v, draws = 40, 5, 400
    frames = torch.arange(t, dtype=torch.float32)
    x = torch.zeros(draws, 3, t, v)
    x[:, 0, :, 0] = torch.sin(frames)  # large frame-to-frame motion
    x[:, 1, :, 1:] = 0.01 * frames[:, None]  # slow drift
    n = (t // 4) * v
    g = torch.Generator().manual_seed(0)
    visible, masked = motion_aware_masks(x, gumbel_noise((draws, n), g), ratio=0.9, tau=0.8)
    assert masked.shape == (draws, num_masked(n, 0.9)) == (draws, 45) and visible.shape == (draws, 5)
    both = torch.cat([visible, masked], 1).sort(1).values
    assert torch.equal(both, torch.arange(n).expand(draws, n))  # a partition of the tokens
    is_masked = torch.zeros(draws, n).scatter_(1, masked, 1.0).view(draws, t // 4, v)
    moving, still = is_masked[..., 0].mean(), is_masked[..., 1:].mean()
    assert moving > still + 0.05, (moving, still)
    assert moving > 0.95  # its probability is e^(1/0.8) ~ 3.5 times a still token's
    # tau = 0: uniform random masking, the same count
    _, masked_u = motion_aware_masks(x, gumbel_noise((draws, n), g), ratio=0.9, tau=0.0)
    uni = torch.zeros(draws, n).scatter_(1, masked_u, 1.0).view(draws, t // 4, v)
    assert abs(float(uni[..., 0].mean() - uni[..., 1:].mean())) < 0.03


def test_masked_count_rounds_instead_of_truncating():
    assert num_masked(750, 0.9) == 675 and num_masked(200, 0.9) == 180 and num_masked(10, 0.25) == 2


def test_sampler_is_a_function_of_seed_and_step_and_draws_per_global_row():
    sampler = SJEPASampler(4, (0.3, 0.3, 0.3), (0, 1, 2))
    inputs = torch.zeros(4, 3, 16, 25, 2)
    a = sampler(8, StepSeeds(5, None, 7), inputs)
    b = sampler(8, StepSeeds(5, None, 7), inputs[:1])  # what another process with fewer rows draws
    c = sampler(8, StepSeeds(5, None, 8), inputs)
    assert a["gumbel"].shape == (8, 2, 100) and a["rotation"].shape == (8, 3, 3) and a["drop_axis"].shape == (8,)
    for k in a:
        assert torch.equal(a[k], b[k]), k
        assert not torch.equal(a[k], c[k]) or k == "drop_axis", k


# ---------------------------------------------------------------------------------------------
# views


def test_rotation_matrices_are_rotations_in_the_order_z_y_x():
    angles = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, math.pi / 2]])
    r = rotation_matrices(angles)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(r), torch.ones(2), atol=1e-6)
    # 90 degrees about z maps x to y
    assert torch.allclose(r[1] @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    c, s = math.cos, math.sin
    rx = torch.tensor([[1, 0, 0], [0, c(0.1), -s(0.1)], [0, s(0.1), c(0.1)]])
    ry = torch.tensor([[c(-0.2), 0, s(-0.2)], [0, 1, 0], [-s(-0.2), 0, c(-0.2)]])
    rz = torch.tensor([[c(0.3), -s(0.3), 0], [s(0.3), c(0.3), 0], [0, 0, 1]])
    assert torch.allclose(r[0], rz @ ry @ rx, atol=1e-6)


def test_projection_zeroes_exactly_the_chosen_axis_of_the_rotated_skeleton():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 8, 25, 2, generator=g)
    views = draw_views(6, g, (0.3, 3.0, 0.3), (0, 1, 2))
    rotated = rotate(x, views["rotation"])
    expect = torch.einsum("ij,jtvm->itvm", views["rotation"][2], x[2])
    assert torch.allclose(rotated[2], expect, atol=1e-5)
    axis = torch.tensor([0, 1, 2, 2, 1, 0])
    view = project(rotated, axis)
    for b in range(6):
        a = int(axis[b])
        assert torch.all(view[b, a] == 0)
        others = [c for c in range(3) if c != a]
        assert torch.equal(view[b, others], rotated[b, others])


def test_draw_views_picks_only_the_allowed_axes_within_the_angle_range():
    g = torch.Generator().manual_seed(0)
    v = draw_views(500, g, (0.0, 0.5, 0.0), (0, 2))
    assert set(v["drop_axis"].tolist()) == {0, 2}
    # rotation about y only: the y row and column are the unit vector
    assert torch.allclose(v["rotation"][:, 1], torch.tensor([0.0, 1.0, 0.0]).expand(500, 3), atol=1e-6)
    angle = torch.atan2(v["rotation"][:, 0, 2], v["rotation"][:, 0, 0])
    assert angle.abs().max() <= 0.5 + 1e-6 and angle.abs().max() > 0.45


def test_the_view_without_projection_is_the_3d_skeleton():
    cfg = _tiny_cfg(projection=False)
    model = sjepa.build_model(cfg)
    x = torch.randn(2, 3, 16, 25, 2)
    target, view = model.views(x, rotation_matrices(torch.ones(2, 3)), torch.tensor([0, 1]))
    assert target is x and view is x
    model = sjepa.build_model(_tiny_cfg())
    r = rotation_matrices(torch.ones(2, 3))
    target, view = model.views(x, r, torch.tensor([0, 1]))
    assert torch.allclose(target, rotate(x, r)) and torch.all(view[0, 0] == 0) and torch.all(view[1, 1] == 0)


# ---------------------------------------------------------------------------------------------
# loss and centre


def test_loss_equals_a_hand_computation():
    pred = torch.tensor([[[1.0, 0.0]]])
    target = torch.tensor([[[0.3, 0.1]]])
    center = torch.tensor([0.1, -0.1])
    # teacher: softmax((0.3-0.1, 0.1+0.1) / 0.06) = softmax(3.333, 3.333) = (0.5, 0.5)
    # student: log_softmax((1, 0) / 0.1) = (-log(1 + e^-10), -10 - log(1 + e^-10))
    lse = math.log(1 + math.exp(-10))
    expect = -(0.5 * -lse + 0.5 * (-10 - lse))
    got = centered_cross_entropy(pred, target, center, student_temp=0.1, teacher_temp=0.06)
    assert float(got) == pytest.approx(expect, rel=1e-6)
    # a second token averages in: identical prediction and target, no centre, one-hot-ish teacher
    pred2 = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    target2 = torch.tensor([[[0.3, 0.1], [1.0, 0.0]]])
    p_t = torch.softmax(torch.tensor([1.0, 0.0]) / 0.06, 0)
    second = -(p_t * torch.log_softmax(torch.zeros(2), 0)).sum()
    got2 = centered_cross_entropy(pred2, target2, torch.zeros(2))
    first = -(torch.softmax(torch.tensor([0.3, 0.1]) / 0.06, 0) * torch.log_softmax(torch.tensor([10.0, 0]), 0)).sum()
    assert float(got2) == pytest.approx(float((first + second) / 2), rel=1e-6)


def test_centre_follows_its_ema_in_closed_form():
    m, k = 0.9, 5
    crit = CenteredCrossEntropy(4, center_momentum=m)
    g = torch.Generator().manual_seed(0)
    means = []
    for _ in range(k):
        target = torch.randn(3, 7, 4, generator=g)
        means.append(target.reshape(-1, 4).mean(0))
        crit(torch.randn(3, 7, 4, generator=g), target)
    # c_k = sum_i (1 - m) m^(k - 1 - i) mean_i, from c_0 = 0
    expect = sum((1 - m) * m ** (k - 1 - i) * mu for i, mu in enumerate(means))
    assert torch.allclose(crit.center, expect, atol=1e-6)
    # a constant mean mu: c_k = (1 - m^k) mu
    crit = CenteredCrossEntropy(2, center_momentum=m)
    for _ in range(k):
        crit(torch.zeros(1, 1, 2), torch.tensor([[[2.0, -1.0]]]))
    assert torch.allclose(crit.center, (1 - m**k) * torch.tensor([2.0, -1.0]), atol=1e-6)


def test_without_centering_the_centre_stays_zero_and_eval_mode_does_not_move_it():
    crit = CenteredCrossEntropy(4, centering=False)
    for _ in range(3):
        loss, entropy = crit(torch.randn(2, 5, 4), torch.randn(2, 5, 4) + 3)
    assert torch.equal(crit.center, torch.zeros(4)) and 0 < float(entropy) < math.log(4)
    crit = CenteredCrossEntropy(4).eval()
    crit(torch.randn(2, 5, 4), torch.randn(2, 5, 4) + 3)
    assert torch.equal(crit.center, torch.zeros(4))


def test_the_centre_is_a_checkpointed_buffer_and_updated_by_a_step():
    cfg = _tiny_cfg()
    model = sjepa.build_model(cfg)
    assert "criterion.center" in model.state_dict()
    batch = _batch(cfg)
    out = model(batch)
    assert out["loss"].requires_grad and float(model.criterion.center.abs().sum()) > 0
    assert out["visible_tokens"] == 4 * 25 - num_masked(4 * 25, 0.9)
    off = sjepa.build_model(_tiny_cfg(centering=False))
    off(batch)
    assert float(off.criterion.center.abs().sum()) == 0


# ---------------------------------------------------------------------------------------------
# encoder, predictor, step


def test_encoder_sees_only_the_visible_tokens():
    torch.manual_seed(0)
    enc = SkeletonEncoder(3, 16, 25, 4, 32, 2, 2).eval()
    x = torch.randn(3, 3, 16, 25)
    g = torch.Generator().manual_seed(0)
    visible, masked = motion_aware_masks(x, gumbel_noise((3, 100), g), 0.9, 0.8)
    out = enc(x, visible)
    assert out.shape == (3, 10, 32)
    # changing the values of masked tokens changes nothing: they are never read
    y = patchify(x, 4).flatten(1, 2).clone()  # [3, 100, 12]
    y.scatter_(1, masked.unsqueeze(-1).expand(-1, -1, 12), 100.0)
    x2 = y.view(3, 4, 25, 4, 3).permute(0, 4, 1, 3, 2).reshape(3, 3, 16, 25)
    assert torch.equal(patchify(x2, 4).flatten(1, 2), y)  # the inverse layout is right
    assert torch.allclose(enc(x2, visible), out, atol=1e-5)
    assert not torch.allclose(enc(x2), enc(x), atol=1e-3)


def test_a_joint_count_other_than_the_graphs_is_a_clear_error():
    cfg = _tiny_cfg()  # NTU's 25 joints
    model = sjepa.build_model(cfg)
    from jepa_core.data import Stamped

    batch = sjepa.train_collate(cfg)([Stamped((torch.randn(3, 16, 17, 2), 0), 0, i) for i in range(2)])
    with pytest.raises(ValueError, match=r"V=25\].*got \(4, 3, 16, 17\)"):  # 2 samples x 2 persons
        model({k: v for k, v in batch.items() if k not in ("labels", "num_bad")})
    with pytest.raises(ValueError, match=r"V=25\].*got \(2, 3, 16, 17\)"):
        model.eval_encoder()(torch.randn(1, 3, 16, 17, 2))


def test_eval_encoder_averages_the_persons_tokens():
    torch.manual_seed(0)
    enc = SkeletonEncoder(3, 16, 25, 4, 32, 2, 2).eval()
    x = torch.randn(2, 3, 16, 25, 2)
    out = enc(x)
    per = enc(persons_as_samples(x)).view(2, 2, 100, 32)
    assert out.shape == (2, 100, 32) and torch.allclose(out, per.mean(1), atol=1e-6)
    layers = enc(x, return_layers=[0, 1])
    assert len(layers) == 2 and torch.allclose(layers[1], out, atol=1e-6)


def _batch(cfg, n: int = 4, step: int = 0) -> dict:
    from jepa_core.data import Stamped

    g = torch.Generator().manual_seed(step)
    collate = sjepa.train_collate(cfg)
    samples = [Stamped((torch.randn(3, cfg.data.window, 25, 2, generator=g), i % 2), step, i) for i in range(n)]
    batch = collate(samples)
    return {k: v for k, v in batch.items() if k not in ("labels", "num_bad")}


def test_one_step_trains_encoder_and_predictor_not_the_target():
    cfg = _tiny_cfg()
    torch.manual_seed(0)
    model = sjepa.build_model(cfg)
    out = model(_batch(cfg))
    out["loss"].backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert math.isfinite(out["loss"].item()) and 0 <= float(out["target_entropy"]) <= math.log(32)
    assert isinstance(model.eval_encoder(), SkeletonEncoder)


# ---------------------------------------------------------------------------------------------
# config and presets


PRESETS = {"demo", "ntu60_xsub", "ntu60_xview", "ntu120_xsub", "ntu120_xset"}


def test_every_preset_loads_and_validates():
    spec = registry.get_method("sjepa")
    assert spec is sjepa.SPEC and set(spec.preset_paths()) == PRESETS
    for name in PRESETS:
        cfg = spec.load_config(name)
        validate(cfg)
        assert cfg.method == "sjepa"
    for name, depth, tau, path in (("ntu60_xsub", 3, 0.8, "NTU60_XSub"), ("ntu60_xview", 3, 0.8, "NTU60_XView"),
                                   ("ntu120_xsub", 5, 0.75, "NTU120_XSub"), ("ntu120_xset", 5, 0.75, "NTU120_XSet")):
        cfg = spec.load_config(name)
        m, o, d = cfg.model, cfg.optim, cfg.data
        assert (m.embed_dim, m.depth, m.num_heads, m.pred_dim, m.pred_depth) == (256, 8, 8, 256, depth)
        assert (m.t_patch, m.mask_ratio, m.motion_tau, d.window) == (4, 0.9, tau, 120)
        assert (o.epochs, o.warmup, o.lr, o.final_lr, o.weight_decay, o.betas) == (400, 20, 1e-3, 5e-4, 0.05,
                                                                                  (0.9, 0.95))
        assert d.batch_size * 4 == 128 and d.path.endswith(path + ".npz")
    demo = spec.load_config("demo")
    assert demo.data.dataset == "synthetic" and set(demo.eval.protocols) == {"linear", "knn", "lowshot"}


@pytest.mark.parametrize("override, key", [
    (["data.window=30"], "data.window"), (["model.embed_dim=30"], "model.embed_dim"),
    (["model.projection_axes=[0,0]"], "model.projection_axes"), (["model.mask_ratio=1.0"], "model.mask_ratio"),
    (["loss.teacher_temp=0"], "loss.teacher_temp"), (["model.projection_angles=[0.1,0.1]"], "projection_angles"),
])
def test_bad_settings_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(sjepa.SPEC.load_config("demo", overrides=override))
