"""Bucketed (padded) masks give the unpadded step's loss and gradients (jepa_core.masks.buckets),
and a compiled step compiles once per bucket instead of once per mask length."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from jepa_core.masks.buckets import (
    bucket_length,
    default_buckets,
    key_padding_mask,
    masked_mean,
    pad_masks,
)
from jepa_core.masks.ops import apply_masks
from jepa_core.nn.vit import VisionTransformer, VisionTransformerPredictor

torch.set_num_threads(1)


def test_buckets_ladder_and_lookup():
    b = default_buckets(196, count=4, multiple=8)
    assert b[-1] == 196 and list(b) == sorted(set(b)) and all(x % 8 == 0 for x in b[:-1])
    assert bucket_length(1, b) == b[0] and bucket_length(b[1], b) == b[1] and bucket_length(b[1] + 1, b) == b[2]
    with pytest.raises(ValueError, match="exceeds the largest bucket 196"):
        bucket_length(197, b)


def test_pad_masks_repeats_the_last_index_and_flags_the_padding():
    m = torch.tensor([[3, 5, 9], [0, 1, 2]])
    ids, valid = pad_masks(m, 5)
    assert ids.tolist() == [[3, 5, 9, 9, 9], [0, 1, 2, 2, 2]]
    assert valid.tolist() == [[True] * 3 + [False] * 2] * 2
    assert key_padding_mask(valid).shape == (2, 1, 1, 5)
    x = torch.randn(2, 5, 4)
    assert torch.allclose(masked_mean(x, valid), x[:, :3].mean())


def _model():
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)
    pred = VisionTransformerPredictor(num_patches=16, embed_dim=32, predictor_embed_dim=16, depth=2, num_heads=2)
    return enc, pred


def _target(enc, x):
    with torch.no_grad():
        return F.layer_norm(enc(x), (32,))


def _step(enc, pred, x, m_ctx, m_tgt):
    """An I-JEPA step (ijepa:src/train.py), EMA-free: target = enc on all tokens, layer-normed,
    at the target masks; prediction from the context; smooth L1."""
    p = pred(enc(x, m_ctx), m_ctx, m_tgt)
    return F.smooth_l1_loss(p, apply_masks(_target(enc, x), m_tgt))


def _padded_step(enc, pred, x, ctx, v_ctx, tgt, v_tgt):
    """The same step on bucketed masks (padded by the collator, outside a compiled step)."""
    p = pred(enc(x, ctx, valid=v_ctx), ctx, tgt, valid_ctx=v_ctx, valid_tgt=v_tgt)
    per_slot = F.smooth_l1_loss(p, apply_masks(_target(enc, x), tgt), reduction="none")
    return masked_mean(per_slot, torch.cat(v_tgt, dim=0))


def _pad(m_ctx, m_tgt, length_ctx, length_tgt):
    ctx, v_ctx = pad_masks(m_ctx, length_ctx)
    tgt = [pad_masks(m, length_tgt) for m in m_tgt]
    return ctx, v_ctx, [t for t, _ in tgt], [v for _, v in tgt]


def _masks(B, k_ctx, k_tgt, n_tgt, seed):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.stack([torch.randperm(16, generator=g)[:k_ctx].sort().values for _ in range(B)])
    tgt = [torch.stack([torch.randperm(16, generator=g)[:k_tgt].sort().values for _ in range(B)]) for _ in range(n_tgt)]
    return ctx, tgt


def test_padded_step_equals_the_unpadded_loss_and_gradients():
    enc, pred = _model()
    x = torch.randn(3, 1, 16, 16)
    ctx, tgt = _masks(3, 7, 3, 2, seed=1)
    params = [p for p in [*enc.parameters(), *pred.parameters()] if p.requires_grad]
    loss = _step(enc, pred, x, ctx, tgt)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    padded = _padded_step(enc, pred, x, *_pad(ctx, tgt, 12, 8))
    pgrads = torch.autograd.grad(padded, params, allow_unused=True)
    torch.testing.assert_close(padded, loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, pgrads):
        if a is None:
            assert b is None or float(b.abs().max()) == 0.0
        else:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    # without the key padding masks the padded tokens would change the result
    ctx_p, _ = pad_masks(ctx, 12)
    assert not torch.allclose(enc(x, ctx_p)[:, :7], enc(x, ctx), atol=1e-4)


def test_sorted_predictor_tokens_and_rope_free_paths_also_match():
    enc, pred = _model()
    pred.sort_tokens = True
    x = torch.randn(2, 1, 16, 16)
    ctx, tgt = _masks(2, 6, 4, 1, seed=2)
    torch.testing.assert_close(_padded_step(enc, pred, x, *_pad(ctx, tgt, 9, 6)), _step(enc, pred, x, ctx, tgt),
                               rtol=1e-5, atol=1e-6)


def test_a_compiled_step_compiles_once_per_bucket_not_per_length():
    from torch._dynamo.testing import CompileCounter

    enc, pred = _model()
    x = torch.randn(2, 1, 16, 16)
    buckets = (8, 12)

    def run(padded: bool) -> int:
        torch._dynamo.reset()
        counter = CompileCounter()
        for k in (5, 6, 7, 9, 10, 11):  # six context lengths, two buckets
            ctx, tgt = _masks(2, k, 3, 1, seed=k)
            if padded:
                torch.compile(_padded_step, backend=counter, dynamic=False)(
                    enc, pred, x, *_pad(ctx, tgt, bucket_length(k, buckets), 4))
            else:
                torch.compile(_step, backend=counter, dynamic=False)(enc, pred, x, ctx, tgt)
        return counter.frame_count

    assert run(padded=True) == 2
    assert run(padded=False) > 2


@pytest.mark.slow
def test_the_inductor_compiled_padded_step_equals_eager():
    enc, pred = _model()
    x = torch.randn(2, 1, 16, 16)
    ctx, tgt = _masks(2, 6, 3, 2, seed=3)
    torch._dynamo.reset()
    compiled = torch.compile(_padded_step, dynamic=False)
    padded = _pad(ctx, tgt, 8, 4)
    torch.testing.assert_close(compiled(enc, pred, x, *padded), _padded_step(enc, pred, x, *padded), rtol=1e-4, atol=1e-5)
