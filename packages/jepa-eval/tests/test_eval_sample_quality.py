"""The sample_quality evaluator: the Frechet distance on known answers, the cached classifier,
the Inception-FID extra's error, and (slow) the whole evaluator on a tiny D-JEPA run."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch
from jepa_core import registry
from jepa_core.config import ConfigError
from jepa_eval import sample_quality as Q


def _gaussian(n, mean, cov_sqrt, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(mean), generator=g, dtype=torch.float64) @ cov_sqrt.T + mean


def test_frechet_distance_of_identical_gaussians_is_zero():
    mu = torch.tensor([1.0, -2.0, 0.5])
    a = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = a @ a.T + 0.1 * torch.eye(3, dtype=torch.float64)
    assert Q.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_shifted_means_is_the_squared_shift():
    mu = torch.zeros(4, dtype=torch.float64)
    sigma = torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64))
    shift = torch.tensor([3.0, 0.0, -4.0, 0.0], dtype=torch.float64)
    assert Q.frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(25.0, rel=1e-9)


def test_frechet_distance_of_scaled_isotropic_gaussians():
    # N(0, a^2 I) vs N(0, b^2 I) in d dims: d (a - b)^2
    d, a, b = 5, 2.0, 0.5
    eye = torch.eye(d, dtype=torch.float64)
    assert Q.frechet_distance(torch.zeros(d), a**2 * eye, torch.zeros(d), b**2 * eye) == pytest.approx(d * 2.25)


def test_frechet_distance_of_samples_approaches_the_analytic_value():
    cov_sqrt = torch.tensor([[1.0, 0.0], [0.5, 0.8]], dtype=torch.float64)
    x = _gaussian(20000, torch.tensor([0.0, 0.0]), cov_sqrt, 1)
    y = _gaussian(20000, torch.tensor([1.0, 1.0]), cov_sqrt, 2)
    assert Q.frechet_distance_of(x, y) == pytest.approx(2.0, abs=0.05)
    assert Q.frechet_distance_of(x, _gaussian(20000, torch.zeros(2), cov_sqrt, 3)) < 0.01
    with pytest.raises(ValueError, match="at least 2"):
        Q.feature_statistics(x[:1])


def test_classifier_is_trained_once_and_cached(tmp_path):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat(64)
    x = torch.randn(128, 1, 8, 8, generator=g) * 0.1 + y.view(-1, 1, 1, 1).float() * 2 - 1  # separable
    key = {"dataset": "toy"}
    net, cached = Q.cached_classifier(tmp_path, x, y, 2, 2, 32, key, "cpu")
    assert not cached and (tmp_path / Q.CLASSIFIER_FILE).is_file()
    _, pred = Q.classify(net, x)
    assert (pred == y).float().mean() > 0.9
    again, cached = Q.cached_classifier(tmp_path, x, y, 2, 2, 32, key, "cpu")
    assert cached
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    _, cached = Q.cached_classifier(tmp_path, x, y, 2, 3, 32, key, "cpu")  # other settings: trained again
    assert not cached


def test_registered_as_an_evaluator():
    assert registry.get_evaluator("sample_quality") is Q.evaluate_sample_quality


@pytest.mark.skipif(importlib.util.find_spec("torchmetrics") is not None, reason="torchmetrics is installed")
def test_inception_fid_without_the_extra_names_it():
    cfg = SimpleNamespace(method="djepa", sample=None, data=None, sample_eval=SimpleNamespace(inception=True))
    with pytest.raises(ConfigError, match=r"jepa-eval\[fid\]"):
        Q.check_config(cfg)


def test_config_without_the_sections_is_refused():
    with pytest.raises(ConfigError, match="cfg.sample"):
        Q.check_config(SimpleNamespace(method="ijepa"))
