"""Known-answer tests of jepa_core.generative (issue #19): heads, diffusion and flow-matching
losses and samplers on a 1-D Gaussian whose optimal denoiser is known in closed form, the
next-set-of-tokens schedule and loop, classifier-free guidance and the mask-ratio sampler."""

from __future__ import annotations

import math

import pytest
import torch
from jepa_core.generative import (
    DenoisingMLP,
    DiffusionLoss,
    FlowMatchingLoss,
    cosine_betas,
    cosine_schedule_counts,
    cosine_unknown_after,
    generate_tokens,
    linear_cfg,
    mask_ratio_sampler,
    spaced_timesteps,
)
from torch import nn

torch.set_num_threads(1)

MU, SD = 0.7, 0.5  # the data distribution N(MU, SD^2) of every token channel


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# closed-form optimal predictors for data N(MU, SD^2)


class OptimalDiffusionHead(nn.Module):
    """E[eps | x_t] and the learned-range v giving the exact reverse variance
    Var[x_{t-1} | x_t] = posterior_var + coef1^2 Var[x0 | x_t] on the chain ``diff``."""

    def __init__(self, diff, token_dim=1, eps_scale=1.0, v_shift=0.0, learn_sigma=True):
        super().__init__()
        self.diff, self.token_dim = diff, token_dim
        self.out_dim = 2 * token_dim if learn_sigma else token_dim
        self.eps_scale, self.v_shift, self.learn_sigma = eps_scale, v_shift, learn_sigma

    def forward(self, x, t, cond):
        d = self.diff
        i = torch.searchsorted(d.timestep_map, t.double().round()).clamp(max=d.num_steps - 1)
        abar = d.alphas_cumprod[i].to(x)[:, None]
        a, b2 = abar.sqrt(), 1 - abar
        denom = a**2 * SD**2 + b2
        eps = self.eps_scale * b2.sqrt() * (x - a * MU) / denom
        if not self.learn_sigma:
            return eps
        var_x0 = SD**2 * b2 / denom
        var = d.posterior_variance[i].to(x)[:, None] + d.posterior_mean_coef1[i].to(x)[
            :, None
        ] ** 2 * var_x0
        lo = d.posterior_log_variance_clipped[i].to(x)[:, None]
        hi = d.log_betas[i].to(x)[:, None]
        v = 2 * (var.log() - lo) / (hi - lo) - 1 + self.v_shift
        return torch.cat([eps, v.expand_as(eps)], dim=1)


class OptimalVelocityHead(nn.Module):
    """E[x - eps | x_t] for x_t = t x + (1 - t) eps, x ~ N(MU, SD^2), eps ~ N(0, 1)."""

    def __init__(self, token_dim=1, scale=1.0, shift=0.0):
        super().__init__()
        self.token_dim = self.out_dim = token_dim
        self.scale, self.shift = scale, shift

    def forward(self, x, t, cond):
        t = t[:, None].to(x)
        var = t**2 * SD**2 + (1 - t) ** 2
        v = MU + (t * SD**2 - (1 - t)) * (x - t * MU) / var
        return self.scale * v + self.shift


def data(n, d=1, seed=1):
    return MU + SD * torch.randn(n, d, generator=gen(seed))


# ----------------------------------------------------------------------------------------------
# heads


def test_denoiser_sizes_match_released_djepa_counts():
    # djepa:models/djepa.py factory comments: denoising 35,749,920 / 72,230,432 / 151,206,944
    expected = {(768, 1024, 6): 35_749_920, (1024, 1280, 8): 72_230_432,
                (1280, 1536, 12): 151_206_944}
    with torch.device("meta"):
        for (cond, width, depth), n in expected.items():
            head = DenoisingMLP(16, cond, width, depth, out_dim=32)
            assert sum(p.numel() for p in head.parameters()) == n


def test_denoiser_starts_at_zero_and_shapes():
    head = DenoisingMLP(4, 6, 32, 2, out_dim=8)
    out = head(torch.randn(5, 4), torch.rand(5) * 999, torch.randn(5, 6))
    assert out.shape == (5, 8) and torch.count_nonzero(out) == 0


# ----------------------------------------------------------------------------------------------
# diffusion


def test_cosine_schedule_and_spacing():
    betas = cosine_betas(1000)
    abar = torch.cumprod(1 - betas, 0)
    f = [math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for u in (0, 500)]
    assert abar[499].item() == pytest.approx(f[1] / f[0], rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)
    steps = spaced_timesteps(1000, 100)
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 999
    loss = DiffusionLoss(DenoisingMLP(1, 1, 8, 1, out_dim=2))
    sd = loss.sample_diffusion
    kept = abar[steps]
    assert torch.allclose(sd.alphas_cumprod, kept, rtol=1e-12)


def test_diffusion_loss_lowest_at_closed_form_optimum():
    x = data(20000)
    cond = torch.zeros(len(x), 1)
    tables = DiffusionLoss(OptimalDiffusionHead(None), token_dim=1).train_diffusion
    t = torch.randint(0, 1000, (len(x),), generator=gen(5))  # the loss's first draw

    def per_token(**kw):
        loss = DiffusionLoss(OptimalDiffusionHead(tables, **kw), batch_mul=1)
        return loss.loss_per_token(x, cond, generator=gen(5))

    best = per_token()
    for kw in ({"eps_scale": 1.1}, {"eps_scale": 0.9}):
        assert per_token(**kw).mean() > best.mean(), kw
    # the variance channel: optimal for every t > 0 (the t = 0 term is MAR's 8-bit
    # discretised decoder likelihood, whose optimum is not the continuous posterior)
    for kw in ({"v_shift": 1.0}, {"v_shift": -1.0}):
        assert per_token(**kw)[t > 0].mean() > best[t > 0].mean(), kw


def test_diffusion_vb_term_does_not_train_the_noise_channel():
    torch.manual_seed(0)
    head = DenoisingMLP(2, 3, 16, 2, out_dim=4)
    for p in head.parameters():  # leave the zero init so outputs are non-trivial
        nn.init.normal_(p, std=0.2)
    x, c = torch.randn(64, 2), torch.randn(64, 3)
    full = DiffusionLoss(head, batch_mul=1)
    seen = {}

    def grab(module, inputs, output):
        output.retain_grad()
        seen["out"] = output

    hook = head.register_forward_hook(grab)
    full.loss_per_token(x, c, generator=gen(3)).sum().backward()
    hook.remove()
    out, grad = seen["out"].detach(), seen["out"].grad
    g = gen(3)  # the same draws as the loss: t first, then the noise
    torch.randint(0, 1000, (64,), generator=g)
    noise = torch.randn(64, 2, generator=g)
    # d/d eps of MSE + VB equals d/d eps of the MSE alone, 2 (eps - noise) / d: the VB term
    # sees the mean prediction detached (it trains only the variance channel)
    assert torch.allclose(grad[:, :2], (out[:, :2] - noise), atol=1e-6)
    assert grad[:, 2:].abs().sum() > 0


def test_diffusion_batch_mul_and_mask():
    head = OptimalDiffusionHead(None)
    loss = DiffusionLoss(head, token_dim=1, batch_mul=3)
    head.diff = loss.train_diffusion
    x, c = data(10), torch.zeros(10, 1)
    per = loss.loss_per_token(x.repeat(3, 1), c.repeat(3, 1), generator=gen(2))
    mask = torch.zeros(10)
    mask[:4] = 1
    got = loss.loss(x, c, mask=mask, generator=gen(2))
    want = per.view(3, 10)[:, :4].mean()
    assert torch.allclose(got, want)
    assert torch.allclose(loss.loss(x, c, generator=gen(2)), per.mean())


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_diffusion_sampling_with_optimal_model_recovers_data(learn_sigma):
    head = OptimalDiffusionHead(None, learn_sigma=learn_sigma)
    loss = DiffusionLoss(head, token_dim=1, sample_steps=100, learn_sigma=learn_sigma)
    head.diff = loss.sample_diffusion  # v needs the respaced chain's variances
    out = loss.sample(torch.zeros(20000, 1), generator=gen(7))
    assert out.mean().item() == pytest.approx(MU, abs=0.02)
    tol = 0.015 if learn_sigma else 0.05  # fixed-large variance is only approximately right
    assert out.std().item() == pytest.approx(SD, abs=tol)
    cold = loss.sample(torch.zeros(20000, 1), temperature=0.5, generator=gen(7))
    assert cold.std().item() < out.std().item()


def test_diffusion_sampling_is_seeded():
    head = OptimalDiffusionHead(None)
    loss = DiffusionLoss(head, token_dim=1, sample_steps=10)
    head.diff = loss.sample_diffusion
    c = torch.zeros(8, 1)
    assert torch.equal(loss.sample(c, generator=gen(1)), loss.sample(c, generator=gen(1)))
    assert not torch.equal(loss.sample(c, generator=gen(1)), loss.sample(c, generator=gen(2)))


class CondShiftHead(nn.Module):
    """A head whose output depends on the condition: the Gaussian optimum plus cond[:, :1]."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.token_dim, self.out_dim = inner, inner.token_dim, inner.out_dim

    def forward(self, x, t, cond):
        out = self.inner(x, t, cond)
        return out + 0.1 * cond[:, :1]


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_cfg_scale_one_is_exactly_conditional_and_guidance_acts(kind):
    if kind == "diffusion":
        inner = OptimalDiffusionHead(None)
        loss = DiffusionLoss(CondShiftHead(inner), token_dim=1, sample_steps=20)
        inner.diff = loss.sample_diffusion
    else:
        loss = FlowMatchingLoss(CondShiftHead(OptimalVelocityHead()), sample_steps=20)
    cond, uncond = torch.ones(50, 2), torch.zeros(50, 2)
    plain = loss.sample(cond, generator=gen(4))
    assert torch.equal(loss.sample(cond, cfg=1.0, uncond=uncond, generator=gen(4)), plain)
    ones = torch.ones(50)  # per-row scales of 1 take the conditional half of the doubled batch
    assert torch.allclose(loss.sample(cond, cfg=ones, uncond=uncond, generator=gen(4)), plain,
                          atol=1e-6)
    guided = loss.sample(cond, cfg=3.0, uncond=uncond, generator=gen(4))
    assert not torch.equal(guided, plain)
    # with identical cond and uncond the guidance is a no-op up to rounding
    same = loss.sample(cond, cfg=3.0, uncond=cond.clone(), generator=gen(4))
    assert torch.allclose(same, plain, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# flow matching


def test_flow_matching_loss_lowest_at_closed_form_optimum():
    x, c = data(20000), torch.zeros(20000, 1)

    def value(**kw):
        return FlowMatchingLoss(OptimalVelocityHead(**kw), batch_mul=1).loss(
            x, c, generator=gen(5)
        ).item()

    best = value()
    for kw in ({"scale": 1.1}, {"scale": 0.9}, {"shift": 0.1}, {"shift": -0.1}):
        assert value(**kw) > best, kw
    # the minimum is the conditional variance E[Var(x - eps | x_t)], known in closed form:
    # with u = x - eps, Var(u | x_t) = Var(u) - Cov(u, x_t)^2 / Var(x_t), averaged over t ~ U(0,1)
    ts = torch.linspace(0, 1, 20001, dtype=torch.float64)
    var_xt = ts**2 * SD**2 + (1 - ts) ** 2
    cov = ts * SD**2 - (1 - ts)
    expected = (SD**2 + 1 - cov**2 / var_xt).mean().item()
    assert best == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("sampler,steps,tol", [("euler", 100, 0.02), ("heun", 20, 0.01)])
def test_flow_sampling_with_optimal_model_recovers_data(sampler, steps, tol):
    loss = FlowMatchingLoss(OptimalVelocityHead(), sample_steps=steps, sampler=sampler)
    out = loss.sample(torch.zeros(20000, 1), generator=gen(8))
    assert out.mean().item() == pytest.approx(MU, abs=0.015)
    assert out.std().item() == pytest.approx(SD, abs=tol)
    shifted = FlowMatchingLoss(OptimalVelocityHead(), sample_steps=50, sampler="heun",
                               time_shift=3.0)
    out = shifted.sample(torch.zeros(20000, 1), generator=gen(8))
    assert out.std().item() == pytest.approx(SD, abs=0.015)


def test_tiny_flow_head_learns_the_closed_form_velocity():
    torch.manual_seed(0)
    head = DenoisingMLP(1, 1, 32, 2)
    loss = FlowMatchingLoss(head, batch_mul=1)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = gen(11)
    c = torch.zeros(256, 1)
    for _ in range(400):
        x = MU + SD * torch.randn(256, 1, generator=g)
        opt.zero_grad()
        loss.loss(x, c, generator=g).backward()
        opt.step()
    t = torch.tensor([0.2, 0.5, 0.8]).repeat_interleave(41)
    xt = t * MU + torch.linspace(-2, 2, 41).repeat(3) * (t**2 * SD**2 + (1 - t) ** 2).sqrt()
    with torch.no_grad():
        got = head(xt[:, None], t, torch.zeros(len(t), 1))
    want = OptimalVelocityHead()(xt[:, None], t, None)
    rel = (got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt()
    assert rel.item() < 0.15


# ----------------------------------------------------------------------------------------------
# next-set-of-tokens sampler


def test_cosine_counts_known_answer_and_invariants():
    # floor(16 cos(pi/8)) = 14, floor(16 cos(pi/4)) = 11, floor(16 cos(3pi/8)) = 6
    assert cosine_schedule_counts(16, 4) == [2, 3, 5, 6]
    assert cosine_unknown_after(16, 4) == [14, 11, 6, 1]  # released clamp keeps 1 at the end
    for n in (1, 2, 7, 49, 256):
        for k in {min(k, n) for k in (1, 2, 3, n // 2 or 1, n)}:
            counts = cosine_schedule_counts(n, k)
            assert len(counts) == k and sum(counts) == n and min(counts) >= 1
    assert cosine_schedule_counts(256, 64)[:3] == [1, 1, 1]
    with pytest.raises(ValueError):
        cosine_schedule_counts(4, 5)


def test_linear_cfg():
    assert linear_cfg(3.0, 128, 256) == 2.0
    assert linear_cfg(3.0, 0, 256) == 1.0 and linear_cfg(3.0, 256, 256) == 3.0
    assert linear_cfg(1.0, 100, 256) == 1.0


class Recorder:
    """predict_condition that records what it sees; cond = token position (and step)."""

    def __init__(self, with_uncond=False):
        self.known, self.tokens, self.with_uncond = [], [], with_uncond

    def __call__(self, tokens, known):
        self.known.append(known.clone())
        self.tokens.append(tokens.clone())
        b, n = known.shape
        pos = torch.arange(n, dtype=tokens.dtype).expand(b, n)
        cond = torch.stack([pos, torch.full_like(pos, len(self.known))], -1)
        return (cond, torch.zeros_like(cond)) if self.with_uncond else cond


def echo_sampler(cond, temperature=1.0, cfg=1.0, uncond=None, generator=None):
    echo_sampler.cfgs.append(cfg)
    return cond.clone()


def test_generate_reveals_each_token_once_on_schedule():
    n, steps, b = 20, 6, 3
    rec, reveals = Recorder(), []
    echo_sampler.cfgs = []
    out = generate_tokens(rec, echo_sampler, n, 2, steps, b, generator=gen(0),
                          on_step=lambda k, tok, rev: reveals.append(rev.clone()))
    counts = cosine_schedule_counts(n, steps)
    seen = torch.zeros(b, n, dtype=torch.bool)
    for k, rev in enumerate(reveals):
        assert (rev.sum(1) == counts[k]).all()
        assert not (rev & seen).any()  # no repeats
        assert torch.equal(rec.known[k], seen)  # the method sees exactly the tokens so far
        # known tokens are passed back unchanged, unknown ones are zero
        assert torch.equal(rec.tokens[k][~seen], torch.zeros_like(rec.tokens[k][~seen]))
        seen |= rev
    assert seen.all()  # union = all
    # each token holds the condition of the step that revealed it: its position and step
    pos = torch.arange(n, dtype=out.dtype).expand(b, n)
    assert torch.equal(out[..., 0], pos)
    step_of = torch.stack([r.float() * (k + 1) for k, r in enumerate(reveals)]).sum(0)
    assert torch.equal(out[..., 1], step_of)
    # orders differ across samples
    assert not torch.equal(reveals[0][0], reveals[0][1]) or not torch.equal(
        reveals[1][0], reveals[1][1]
    )
    assert echo_sampler.cfgs == [1.0] * steps


def test_generate_linear_cfg_schedule_as_released():
    n, steps = 16, 4
    echo_sampler.cfgs = []
    generate_tokens(Recorder(with_uncond=True), echo_sampler, n, 2, steps, 2, cfg=3.0,
                    generator=gen(0))
    after = [14, 11, 6, 1]
    assert echo_sampler.cfgs == [1 + 2.0 * (n - a) / n for a in after]
    with pytest.raises(ValueError):
        generate_tokens(Recorder(), echo_sampler, n, 2, steps, 2, cfg=3.0)


def _flow_model(seed=0):
    torch.manual_seed(seed)
    head = DenoisingMLP(3, 4, 16, 1)
    for p in head.parameters():
        nn.init.normal_(p, std=0.3)
    return FlowMatchingLoss(head, sample_steps=4)


def _predict(tokens, known):
    cond = torch.cat([tokens, known[..., None].to(tokens.dtype)], -1)
    return cond, torch.zeros_like(cond)


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_generate_is_seeded_and_cfg_one_exact(kind):
    if kind == "flow":
        model = _flow_model()
    else:
        torch.manual_seed(0)
        head = DenoisingMLP(3, 4, 16, 1, out_dim=6)
        for p in head.parameters():
            nn.init.normal_(p, std=0.3)
        model = DiffusionLoss(head, sample_steps=5)

    def run(seed, cfg=1.0, predict=_predict, temperature=0.9):
        return generate_tokens(predict, model.sample, 10, 3, 4, 2, cfg=cfg,
                               temperature=temperature, generator=gen(seed))

    a, b = run(1), run(1)
    assert torch.equal(a, b) and not torch.equal(a, run(2))
    cond_only = run(1, predict=lambda tok, kn: _predict(tok, kn)[0])
    assert torch.equal(a, cond_only)  # cfg 1 with an uncond branch == the conditional model
    assert not torch.equal(run(1, cfg=2.0), a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generate_on_cuda():
    model = _flow_model().cuda()
    out = generate_tokens(_predict, model.sample, 10, 3, 4, 2, cfg=2.0,
                          generator=torch.Generator("cuda").manual_seed(0))
    assert out.is_cuda and torch.isfinite(out).all()
    x = torch.randn(8, 3, device="cuda")
    assert torch.isfinite(model.loss(x, torch.randn(8, 4, device="cuda")))


# ----------------------------------------------------------------------------------------------
# mask ratio


def test_mask_ratio_range_mean_and_seed():
    s = mask_ratio_sampler()  # released: truncnorm((0.7 - 1) / 0.25, 0, loc=1, scale=0.25)
    r = s.sample(200_000, generator=gen(0))
    assert r.min().item() >= 0.7 and r.max().item() <= 1.0
    assert r.min().item() < 0.701 and r.max().item() > 0.999

    def pdf(z):
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def cdf(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    a, b = -1.2, 0.0
    analytic = 1.0 + 0.25 * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a))
    assert s.mean == pytest.approx(analytic, rel=1e-9)
    assert analytic == pytest.approx(0.867, abs=5e-4)
    assert r.mean().item() == pytest.approx(analytic, abs=2e-3)
    # density increases towards the mode at 1: more mass in [0.9, 1] than in [0.7, 0.8]
    assert ((r > 0.9).float().mean() > (r < 0.8).float().mean()).item()
    assert torch.equal(s.sample(5, gen(3)), s.sample(5, gen(3)))
    k = s.num_masked(256, gen(3))
    assert k == math.ceil(256 * s.sample(1, gen(3)).item()) and 180 <= k <= 256
    mask = s.sample_mask(4, 256, gen(3))
    assert mask.shape == (4, 256) and (mask.sum(1) == k).all()
    assert not torch.equal(mask[0], mask[1])  # a random order per sample


def test_readme_generative_example_runs(capsys):
    import re
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1] / "README.md"
    if not readme.is_file():
        pytest.skip("README.md not beside the tests")
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    block = next(b for b in blocks if "jepa_core.generative" in b)
    exec(compile(block, "README.md[generative]", "exec"), {"__name__": "readme_example"})
    assert "torch.Size([2, 16, 4])" in capsys.readouterr().out


class NoisyEpsHead(nn.Module):
    """The optimal noise prediction plus a constant error of 0.3, variance channel -1."""

    def __init__(self, diff):
        super().__init__()
        self.opt = OptimalDiffusionHead(diff, learn_sigma=False)

    def forward(self, x, t, cond):
        eps = self.opt(x, t, cond) + 0.3
        return torch.cat([eps, -torch.ones_like(eps)], dim=-1)


def test_clip_denoised_keeps_an_inexact_head_in_range():
    """Near t = T the x_0 prediction divides the noise error by sqrt(alpha_bar_T) ~ 1e-4: a
    slightly wrong head (a briefly trained one) drives an unclamped 25-step chain far out of
    the data range; clip_denoised=1 keeps every step's x_0 in [-1, 1]."""
    loose = DiffusionLoss(None, token_dim=1, sample_steps=25)
    head = NoisyEpsHead(loose.train_diffusion)
    loose.head = head
    clipped = DiffusionLoss(head, token_dim=1, sample_steps=25, clip_denoised=1.0)
    head.opt.diff = loose.sample_diffusion
    c = torch.zeros(2000, 1)
    assert loose.sample(c, generator=gen(0)).abs().max() > 5
    assert clipped.sample(c, generator=gen(0)).abs().max() <= 1.5
