"""I-JEPA with bucketed masks (mask.buckets > 0): the same batch gives the official
(unpadded) step's loss and gradients, with masks of at most N lengths."""

from __future__ import annotations

import torch
from jepa_image import ijepa

torch.set_num_threads(1)
OVERRIDES = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.pred_depth=2",
             "model.pred_emb_dim=16", "data.batch_size=4", "train.num_threads=1"]


def _batch(cfg, dataset):
    _, collate = ijepa.build_train_data(cfg)
    return collate([dataset[i] for i in range(4)])


def test_bucketed_masks_give_the_unpadded_loss_and_gradients():
    plain = ijepa.SPEC.load_config("demo", overrides=OVERRIDES)
    bucketed = ijepa.SPEC.load_config("demo", overrides=[*OVERRIDES, "mask.buckets=3"])
    dataset, _ = ijepa.build_train_data(plain)
    torch.manual_seed(0)
    model = ijepa.build_model(plain)
    params = [p for p in model.parameters() if p.requires_grad]
    b0, b1 = _batch(plain, dataset), _batch(bucketed, dataset)
    k_enc, k_pred = b0["masks_enc"][0].shape[1], b0["masks_pred"][0].shape[1]
    assert b1["masks_enc"][0].shape[1] >= k_enc and b1["masks_pred"][0].shape[1] >= k_pred
    assert (b1["masks_enc_valid"][0].sum(1) == k_enc).all() and torch.equal(b1["masks_enc"][0][:, :k_enc], b0["masks_enc"][0])
    out0, out1 = model({k: v for k, v in b0.items() if k != "labels"}), model({k: v for k, v in b1.items() if k != "labels"})
    torch.testing.assert_close(out1["loss"], out0["loss"], rtol=1e-5, atol=1e-6)
    assert int(out1["context_tokens"]) == k_enc and int(out1["target_tokens"]) == k_pred
    g0 = torch.autograd.grad(out0["loss"], params, allow_unused=True)
    g1 = torch.autograd.grad(out1["loss"], params, allow_unused=True)
    for a, b in zip(g0, g1):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_the_sampler_uses_at_most_n_lengths_over_many_batches():
    cfg = ijepa.SPEC.load_config("demo", overrides=[*OVERRIDES, "mask.buckets=3"])
    dataset, collate = ijepa.build_train_data(cfg)
    lengths = set()
    for _ in range(12):
        b = collate([dataset[i] for i in range(4)])
        lengths.add((b["masks_enc"][0].shape[1], b["masks_pred"][0].shape[1]))
    sampler = collate.sampler
    assert {e for e, _ in lengths} <= set(sampler.buckets_enc) and {p for _, p in lengths} <= set(sampler.buckets_pred)
    assert len(sampler.buckets_enc) <= 3 and len(sampler.buckets_pred) <= 3
