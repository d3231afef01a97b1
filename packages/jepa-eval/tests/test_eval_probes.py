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
    assert r.weight_decay in r.grid and set(r.grid) == {1e-5, 1e-4, 1e-3, 1e-2, 1e-1}
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
