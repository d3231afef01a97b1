"""Linear and k-NN probes on data with known answers."""

from __future__ import annotations

import torch
from jepa_eval.probes import knn_probe, linear_probe, standardize

C, D = 5, 64


def clusters(n_train: int = 40, n_test: int = 40, sep: float = 8.0, seed: int = 0):
    """C well-separated Gaussian clusters in D dimensions (means ~ N(0, sep^2), unit noise)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, D, generator=g) * sep
    ytr = torch.arange(C).repeat_interleave(n_train)
    yte = torch.arange(C).repeat_interleave(n_test)
    xtr = means[ytr] + torch.randn(len(ytr), D, generator=g)
    xte = means[yte] + torch.randn(len(yte), D, generator=g)
    return xtr, ytr, xte, yte


def test_linear_probe_separable_clusters_is_perfect():
    xtr, ytr, xte, yte = clusters()
    r = linear_probe(xtr, ytr, xte, yte)
    assert r.accuracy == 100.0
    assert r.val_accuracy == 100.0
    assert r.weight_decay in r.grid and set(r.grid) == {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1}
    assert all(0.0 <= v <= 100.0 for v in r.grid.values())


def test_knn_probe_separable_clusters_is_perfect():
    xtr, ytr, xte, yte = clusters()
    acc = knn_probe(xtr, ytr, xte, yte, ks=(1, 10, 20))
    assert acc == {1: 100.0, 10: 100.0, 20: 100.0}


def test_knn_more_neighbours_than_samples_and_chunks():
    xtr, ytr, xte, yte = clusters(n_train=4, n_test=30)
    # k larger than the 20 training samples is clipped; chunking does not change the answer.
    a = knn_probe(xtr, ytr, xte, yte, ks=(1, 200), chunk=7)
    b = knn_probe(xtr, ytr, xte, yte, ks=(1, 200), chunk=1024)
    assert a == b
    assert a[1] == 100.0
    # With every training sample voting, the temperature-weighted vote still favours the own
    # cluster (similarities near 1 dominate at T = 0.07).
    assert a[200] == 100.0


def test_shuffled_labels_give_chance():
    xtr, ytr, xte, yte = clusters(n_train=60, n_test=100, seed=1)
    g = torch.Generator().manual_seed(123)
    shuffled = ytr[torch.randperm(len(ytr), generator=g)]
    assert (shuffled != ytr).float().mean() > 0.6
    chance = 100.0 / C
    lin = linear_probe(xtr, shuffled, xte, yte, l2_grid=(1e-3,))
    knn = knn_probe(xtr, shuffled, xte, yte, ks=(1,))
    assert abs(lin.accuracy - chance) < 12, lin.accuracy
    assert abs(knn[1] - chance) < 12, knn[1]
    # ... while the true labels on the same features are perfect.
    assert knn_probe(xtr, ytr, xte, yte, ks=(1,))[1] == 100.0


def test_linear_probe_is_deterministic_on_overlapping_clusters():
    xtr, ytr, xte, yte = clusters(n_train=20, n_test=20, sep=0.12, seed=2)  # overlapping: not all 100
    a = linear_probe(xtr, ytr, xte, yte, l2_grid=(1e-3, 1e-1))
    b = linear_probe(xtr, ytr, xte, yte, l2_grid=(1e-3, 1e-1))
    assert a == b and torch.equal(a.predictions, b.predictions)
    assert (a.predictions == yte).double().mean().item() * 100 == a.accuracy
    assert 100.0 / C < a.accuracy < 100.0


def test_linear_probe_accuracy_is_on_test_not_train():
    # Test labels permuted against the features: the probe (fit on clean train data) must score
    # the permuted test set at chance, proving it scores test and not train.
    xtr, ytr, xte, yte = clusters(n_test=100)
    wrong = (yte + 1) % C
    assert linear_probe(xtr, ytr, xte, wrong, l2_grid=(1e-3,)).accuracy == 0.0
    assert knn_probe(xtr, ytr, xte, wrong, ks=(5,))[5] == 0.0


def test_standardize_uses_train_statistics():
    g = torch.Generator().manual_seed(0)
    tr = torch.randn(100, 3, generator=g) * torch.tensor([1.0, 5.0, 0.1]) + 7
    te = torch.randn(50, 3, generator=g) + 100
    s_tr, s_te = standardize(tr, te)
    assert torch.allclose(s_tr.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(s_tr.std(0), torch.ones(3), atol=1e-5)
    assert torch.allclose(s_te, (te - tr.mean(0)) / tr.std(0), atol=1e-5)
    # A constant feature does not divide by zero.
    const = torch.ones(10, 2)
    assert torch.isfinite(standardize(const)[0]).all()


def _correlated_problem(seed: int = 0, n: int = 600, d: int = 48, c: int = 5):
    """Features that are noisy mixtures of 6 latent factors (strongly correlated, so L-BFGS needs
    hundreds of iterations at small L2), labels from two of the factors."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 6, generator=g)
    x = z @ torch.randn(6, d, generator=g) + 0.05 * torch.randn(n, d, generator=g)
    y = (z[:, :2] @ torch.randn(2, c, generator=g) + 0.3 * torch.randn(n, c, generator=g)).argmax(1)
    return standardize(x)[0], y, c


def _objective_and_grad(x, y, l2, w):
    w = w.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(torch.cat([x, torch.ones(len(x), 1)], 1) @ w, y)
    loss = loss + 0.5 * l2 * (w[:-1] ** 2).sum()
    loss.backward()
    return loss.item(), w.grad


def test_logistic_fit_converges_at_small_l2():
    # Regression: the fit used to stop after 100 L-BFGS iterations, where this problem's
    # objective is still ~5e-3 above its minimum.
    from jepa_eval.probes import _fit_logistic

    x, y, c = _correlated_problem()
    w = _fit_logistic(x, y, c, 1e-5)
    loss, grad = _objective_and_grad(x, y, 1e-5, w)
    ref_loss, _ = _objective_and_grad(x, y, 1e-5, _fit_logistic(x, y, c, 1e-5, max_iter=5000))
    assert grad.abs().max() < 6e-4, grad.abs().max()  # float32: ~1e-4 is where progress stops
    assert loss - ref_loss < 1e-4, (loss, ref_loss)
    short_loss, _ = _objective_and_grad(x, y, 1e-5, _fit_logistic(x, y, c, 1e-5, max_iter=100))
    assert short_loss - ref_loss > 2e-3  # the problem is hard enough to tell the two apart


def test_logistic_hand_written_gradient_is_autograd_gradient(monkeypatch):
    # The closure writes the gradient by hand; at a random point (far from the optimum) it must
    # equal autograd's. L-BFGS's step is replaced by one closure call to read it.
    from jepa_eval import probes

    x, y, c = _correlated_problem(seed=3)
    w0 = torch.randn(x.shape[1] + 1, c, generator=torch.Generator().manual_seed(0))
    captured = {}

    def one_closure_call(self, closure):
        closure()
        captured["grad"] = self.param_groups[0]["params"][0].grad.clone()
        captured["w"] = self.param_groups[0]["params"][0].detach().clone()

    monkeypatch.setattr(torch.optim.LBFGS, "step", one_closure_call)
    probes._fit_logistic(x, y, c, 1e-2, init=w0)
    assert torch.equal(captured["w"], w0)
    _, grad = _objective_and_grad(x, y, 1e-2, w0)
    torch.testing.assert_close(captured["grad"], grad, rtol=1e-4, atol=1e-6)


def test_linear_probe_warm_started_path_finds_the_cold_optimum():
    # L2 > 0 makes the objective strictly convex: warm starts change the route, not the answer.
    from jepa_eval.probes import _fit_logistic

    x, y, c = _correlated_problem(seed=1)
    warm = None
    for l2 in (1e-1, 1e-2, 1e-3):
        warm = _fit_logistic(x, y, c, l2, init=warm)
    cold = _fit_logistic(x, y, c, 1e-3)
    assert (_objective_and_grad(x, y, 1e-3, warm)[0] - _objective_and_grad(x, y, 1e-3, cold)[0]) < 1e-5
    torch.testing.assert_close(warm, cold, atol=2e-3, rtol=0)


def test_linear_probe_walks_the_path_warm_and_stops_after_two_falls(monkeypatch):
    # The path logic alone, with fits that return their L2 and a validation accuracy set per L2:
    # strongest L2 first, each fit warm-started from the previous one, stop after two falls in a
    # row (so 1e-4, the best point, is never reached), refit at the best visited point from its fit.
    from jepa_eval import probes

    val_acc = {1.0: 50.0, 0.1: 80.0, 0.01: 70.0, 1e-3: 60.0, 1e-4: 90.0, 1e-5: 90.0}
    calls = []

    def fake_fit(x, y, num_classes, l2, max_iter=1000, init=None):
        calls.append((l2, None if init is None else init.item(), len(x)))
        return torch.tensor([[l2]], dtype=torch.float64)  # exact, so it keys val_acc

    def fake_predict(w, x):  # labels are all 0: the first acc % of the rows are right
        right = round(val_acc.get(w.item(), 100.0) / 100 * len(x))
        return (torch.arange(len(x)) >= right).long()

    monkeypatch.setattr(probes, "_fit_logistic", fake_fit)
    monkeypatch.setattr(probes, "_predict", fake_predict)
    y = torch.zeros(100, dtype=torch.long)
    r = probes.linear_probe(torch.randn(100, 3), y, torch.randn(10, 3), y[:10], l2_grid=tuple(val_acc))
    assert r.grid == {1.0: 50.0, 0.1: 80.0, 0.01: 70.0, 1e-3: 60.0}
    assert r.weight_decay == 0.1 and r.val_accuracy == 80.0
    assert calls == [(1.0, None, 90), (0.1, 1.0, 90), (0.01, 0.1, 90), (1e-3, 0.01, 90), (0.1, 0.1, 100)]
