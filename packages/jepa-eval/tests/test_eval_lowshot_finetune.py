"""Low-shot subsets and probes; fine-tuning in full or of the last blocks, on a copy."""

from __future__ import annotations

import statistics

import pytest
import torch
from jepa_core.nn import VisionTransformer
from jepa_eval.finetune import finetune
from jepa_eval.lowshot import low_shot, samples_per_class, stratified_subset
from torch.utils.data import TensorDataset


def test_stratified_subset_sizes_per_class():
    # unbalanced classes: 200, 50 and 3 samples
    y = torch.cat([torch.zeros(200), torch.ones(50), torch.full((3,), 2)]).long()
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    for frac, want in [(0.01, {0: 2, 1: 1, 2: 1}), (0.1, {0: 20, 1: 5, 2: 1}), (0.5, {0: 100, 1: 25, 2: 2})]:
        assert samples_per_class(y, frac) == want
        idx = stratified_subset(y, frac, seed=0)
        assert len(idx) == len(set(idx.tolist())) == sum(want.values())
        got = {int(c): int((y[idx] == c).sum()) for c in torch.unique(y)}
        assert got == want
    with pytest.raises(ValueError):
        samples_per_class(y, 0.0)


def test_seeds_change_subsets_and_same_seed_repeats():
    y = torch.arange(10).repeat(100)
    a, b, c = (stratified_subset(y, 0.1, s) for s in (0, 0, 1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _clusters(n_per_class, seed, C=5, D=32, sep=3.0):
    means = torch.randn(C, D, generator=torch.Generator().manual_seed(99)) * sep
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat(n_per_class)
    return means[y] + torch.randn(len(y), D, generator=g), y


def test_low_shot_mean_and_std_over_seeds():
    xtr, ytr = _clusters(100, 0, sep=0.5)  # overlapping: a few labels per class are noisy
    xte, yte = _clusters(40, 1, sep=0.5)
    res = low_shot(xtr, ytr, xte, yte, fractions=(0.02, 0.5), seeds=(0, 1, 2), l2_grid=(1e-2, 1e-1))
    assert set(res) == {0.02, 0.5}
    for frac, r in res.items():
        assert len(r.accuracies) == 3
        assert r.mean == pytest.approx(statistics.fmean(r.accuracies))
        assert r.std == pytest.approx(statistics.stdev(r.accuracies))
        assert r.per_class == {c: max(1, round(frac * 100)) for c in range(5)}
        assert r.samples == 5 * r.per_class[0]
    assert res[0.02].std > 0  # different subsets, different probes
    assert res[0.5].mean > res[0.02].mean > 20.0  # more labels help; both above chance


def _tiny_images(n_per_class: int, seed: int, C: int = 4):
    """C fixed 8x8 prototypes (pixel std 3, so that the content is not drowned by the sin-cos
    table at init) plus unit noise."""
    protos = 3.0 * torch.randn(C, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat(n_per_class)
    x = protos[y] + torch.randn(len(y), 1, 8, 8, generator=g)
    return TensorDataset(x, y)


def _vit():
    torch.manual_seed(0)
    return VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2)


def test_full_finetune_beats_chance_and_leaves_the_callers_encoder_alone():
    enc = _vit()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    flags = {n: p.requires_grad for n, p in enc.named_parameters()}
    r = finetune(enc, _tiny_images(16, 0), _tiny_images(10, 1), num_classes=4, epochs=10, lr=1e-2, batch_size=16)
    assert r.accuracy >= 90.0  # chance is 25 %
    assert r.train_loss[-1] < r.train_loss[0]
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert {n: p.requires_grad for n, p in enc.named_parameters()} == flags
    assert enc.training  # mode untouched too
    # the copy did train, and its frozen sin-cos table stayed frozen and unchanged
    assert not torch.equal(r.model.encoder.blocks[0].attn.qkv.weight, enc.blocks[0].attn.qkv.weight)
    assert torch.equal(r.model.encoder.pos_embed, enc.pos_embed)
    assert r.trainable_params == r.total_params - enc.pos_embed.numel()


def test_last_block_finetune_freezes_the_others():
    enc = _vit()
    r = finetune(enc, _tiny_images(16, 0), _tiny_images(10, 1), num_classes=4, last_blocks=1, epochs=10,
                 lr=1e-2, batch_size=16)
    tuned = r.model.encoder.state_dict()
    orig = enc.state_dict()
    for k, v in orig.items():
        if k.startswith("blocks.1.") or k.startswith("norm."):
            continue
        assert torch.equal(tuned[k], v), f"{k} changed but should be frozen"
    assert not torch.equal(tuned["blocks.1.mlp.fc1.weight"], orig["blocks.1.mlp.fc1.weight"])
    n_block = sum(p.numel() for p in enc.blocks[1].parameters())
    n_norm = sum(p.numel() for p in enc.norm.parameters())
    n_head = 16 * 4 + 4
    assert r.trainable_params == n_block + n_norm + n_head
    assert r.accuracy >= 80.0  # chance is 25 %


def test_last_blocks_needs_blocks():
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8))
    with pytest.raises(ValueError, match="blocks"):
        finetune(enc, _tiny_images(2, 0), _tiny_images(2, 1), num_classes=4, last_blocks=1, epochs=1)
