"""DMT-JEPA's neighbour-aggregation head (jepa_image.dmt_head) against known answers: brute-force
neighbour search, hand-listed window indices, hand-computed outputs of a one-token oracle
written with plain tensor ops, and the released code's behaviours behind their flags."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from jepa_core.config import ConfigError
from jepa_image.dmt_head import (
    NeighbourAggregationHead,
    convert_released_state_dict,
    neighbour_index,
    select_neighbours,
)


def _randomise(head: NeighbourAggregationHead, seed: int = 0) -> NeighbourAggregationHead:
    """Weights far from the init (which is nearly an identity), so every part of the block shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return head


def _ln(x, mod):
    return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, mod.eps)


def _oracle(head: NeighbourAggregationHead, query: torch.Tensor, nbrs: torch.Tensor) -> torch.Tensor:
    """One token's target by hand: ``query [D]`` attends to ``[query] + nbrs [m, D]`` in each
    block (softmax written out per head), residual on the query, MLP, final LayerNorm."""
    with torch.no_grad():
        return _oracle_(head, query, nbrs)


def _oracle_(head, query, nbrs):
    q = query.double()
    nb = nbrs.double()
    for blk in head.blocks:
        a = blk.attn
        w = {n: p.double() for n, p in blk.named_parameters()}
        u = torch.cat([q[None], nb])  # [1 + m, D]
        u = F.layer_norm(u, (u.shape[-1],), w["norm1.weight"], w["norm1.bias"], blk.norm1.eps)
        qq = u[0] @ w["attn.q.weight"].T + w["attn.q.bias"]
        kk = u @ w["attn.k.weight"].T + w["attn.k.bias"]
        vv = u @ w["attn.v.weight"].T + w["attn.v.bias"]
        h, d = a.num_heads, q.shape[0] // a.num_heads
        out = []
        for i in range(h):
            s = slice(i * d, (i + 1) * d)
            logits = torch.tensor([float(qq[s] @ kk[j, s]) for j in range(len(u))], dtype=torch.float64) / math.sqrt(d)
            p = torch.exp(logits - logits.max())
            out.append((p / p.sum()) @ vv[:, s])
        q = q + torch.cat(out) @ w["attn.proj.weight"].T + w["attn.proj.bias"]
        hdn = F.layer_norm(q, (q.shape[0],), w["norm2.weight"], w["norm2.bias"], blk.norm2.eps)
        hdn = F.gelu(hdn @ w["mlp.fc1.weight"].T + w["mlp.fc1.bias"])
        q = q + hdn @ w["mlp.fc2.weight"].T + w["mlp.fc2.bias"]
    return F.layer_norm(q, (q.shape[0],), head.norm.weight.double(), head.norm.bias.double(), head.norm.eps)


def _brute_candidates(h: int, w: int, i: int, r: int, wrap: bool) -> set[int]:
    ri, ci = divmod(i, w)
    out = set()
    for rj, cj in itertools.product(range(h), range(w)):
        dr, dc = rj - ri, cj - ci
        if wrap:
            dr = min(dr % h, -(-dr % h), key=abs)
            dc = min(dc % w, -(-dc % w), key=abs)
        if (dr, dc) != (0, 0) and abs(dr) <= r and abs(dc) <= r:
            out.add(rj * w + cj)
    return out


# ---------------------------------------------------------------------------------------------
# neighbour selection


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("grid,window,k", [((5, 6), 3, 4), ((7, 5), 5, 7), ((3, 3), 3, 8)])
def test_topk_selection_equals_brute_force(grid, window, k, wrap):
    h, w = grid
    x = torch.randn(3, h * w, 16, generator=torch.Generator().manual_seed(1))
    index, valid = neighbour_index(h, w, window, wrap)
    got, ok = select_neighbours(x, index, valid, k)
    xd = F.normalize(x.double(), dim=-1)
    for b, i in itertools.product(range(3), range(h * w)):
        cands = _brute_candidates(h, w, i, window // 2, wrap)
        ranked = sorted(cands, key=lambda j: -float(xd[b, i] @ xd[b, j]))
        expect = set(ranked[:k])
        chosen = {int(j) for j, v in zip(got[b, i], ok[b, i]) if v}
        assert chosen == expect, (b, i)
        assert int(ok[b, i].sum()) == min(k, len(cands))


def test_neighbour_indices_at_corners_and_edges():
    # a 4 x 5 grid (rows x columns), token = row * 5 + column
    idx, ok = neighbour_index(4, 5, 3, wrap=False)
    got = lambda i: {int(j) for j, v in zip(idx[i], ok[i]) if v}  # noqa: E731
    assert got(0) == {1, 5, 6}  # top-left corner
    assert got(4) == {3, 8, 9}  # top-right corner
    assert got(19) == {13, 14, 18}  # bottom-right corner
    assert got(2) == {1, 3, 6, 7, 8}  # top edge
    assert got(10) == {5, 6, 11, 15, 16}  # left edge
    assert got(6) == {0, 1, 2, 5, 7, 10, 11, 12}  # interior
    assert bool((idx[~ok] == torch.arange(20)[:, None].expand(-1, 8)[~ok]).all())  # padding points at itself
    idx, ok = neighbour_index(4, 5, 3, wrap=True)
    assert bool(ok.all())
    got = lambda i: set(idx[i].tolist())  # noqa: E731
    assert got(0) == {19, 15, 16, 4, 1, 9, 5, 6}  # rows {3, 0, 1} x columns {4, 0, 1}
    assert got(19) == {13, 14, 10, 18, 15, 3, 4, 0}  # rows {2, 3, 0} x columns {3, 4, 0}
    assert got(2) == {16, 17, 18, 1, 3, 6, 7, 8}
    assert got(6) == {0, 1, 2, 5, 7, 10, 11, 12}
    # window 5 on a 5 x 5 grid with wrap: every other token exactly once
    idx, _ = neighbour_index(5, 5, 5, wrap=True)
    assert all(sorted(idx[i].tolist()) == [j for j in range(25) if j != i] for i in range(25))


# ---------------------------------------------------------------------------------------------
# outputs


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("query,wrap", [("neighbour_mean", False), ("image_mean", True), ("neighbour_mean", True)])
def test_identical_features_give_the_layernorm_of_the_query_path(depth, query, wrap):
    torch.manual_seed(0)
    head = _randomise(NeighbourAggregationHead(24, 3, top_k=4, depth=depth, query=query, wrap=wrap))
    f = torch.randn(24)
    x = f.expand(2, 25, 24).clone()
    out = head(x, grid=(5, 5))
    with torch.no_grad():
        # every key of block 1 is f: attention returns v(LN(f)) whatever q and k; the query path
        b1 = head.blocks[0]
        path = f + b1.attn.proj(b1.attn.v(b1.norm1(f)))
        path = path + b1.mlp(b1.norm2(path))
        if depth == 1:
            expect = head.norm(path).expand(2, 25, 24)
            assert torch.allclose(out, expect, atol=1e-5)
            return
        # block 2 attends from that path to [path, f x m]: m = 4, or 3 at a clipped corner
        for i, m in ((12, 4), (0, 4 if wrap else 3), (2, 4)):
            ref = _oracle(head, f, f.expand(m, 24))
            assert torch.allclose(out[:, i].double(), ref.expand(2, 24), atol=1e-5), (i, m)
    if not wrap:  # the clipped corner really differs from the interior at depth 2
        assert not torch.allclose(out[0, 0], out[0, 12], atol=1e-4)


@pytest.mark.parametrize("grid,window", [((3, 3), 3), ((5, 7), 3), ((7, 5), 5), ((9, 11), 3), ((1 + 2 * 7, 3), 3)])
def test_shapes_are_preserved_at_odd_grid_sizes(grid, window):
    head = NeighbourAggregationHead(16, 2, top_k=3, window=window)
    n = grid[0] * grid[1]
    x = torch.randn(2, n, 16)
    assert head(x, grid=grid).shape == (2, n, 16)
    assert head(x[:, : n - 2]).shape == (2, n - 2, 16)  # global mode, any number of tokens
    assert torch.isfinite(head(x, grid=grid)).all()


@pytest.mark.parametrize("query,mixup,wrap", [("neighbour_mean", False, False), ("image_mean", False, True),
                                              ("image_mean", True, True)])
def test_every_token_equals_the_one_token_oracle(query, mixup, wrap):
    """Local mode = the oracle on the brute-force neighbour set and the flag's query, token by token
    (this also checks that computing keys and values once per token changes nothing)."""
    torch.manual_seed(2)
    head = _randomise(NeighbourAggregationHead(12, 3, top_k=4, query=query, query_batch_mixup=mixup, wrap=wrap), 3)
    b, (gh, gw) = 3, (4, 5)
    x = torch.randn(b, gh * gw, 12)
    out = head(x, grid=(gh, gw)).double()
    xd = F.normalize(x.double(), dim=-1)
    for bi, i in itertools.product(range(b), range(gh * gw)):
        cands = _brute_candidates(gh, gw, i, 1, wrap)
        nb = sorted(cands, key=lambda j: -float(xd[bi, i] @ xd[bi, j]))[:4]
        if query == "neighbour_mean":
            q = x[bi, nb].mean(0)
        else:  # the released row order: row bi * N + i takes image (bi * N + i) mod B
            q = x[(bi * gh * gw + i) % b if mixup else bi].mean(0)
        assert torch.allclose(out[bi, i], _oracle(head, q, x[bi, nb]), atol=1e-5), (bi, i)


def test_global_mode_by_hand():
    torch.manual_seed(4)
    head = _randomise(NeighbourAggregationHead(12, 2, depth=2), 5)
    z = torch.randn(2, 7, 12)
    out = head(z)
    ref = copy.deepcopy(head).double()
    with torch.no_grad():
        x = z.double()
        for blk in ref.blocks:
            # the attended vector of the mean query over [mean, tokens], added to every token
            att = torch.stack([_oracle_attention(blk, x[b].mean(0), x[b]) for b in range(2)])
            x = x + att[:, None]
            x = x + blk.mlp(blk.norm2(x))
        expect = ref.norm(x)
    assert torch.allclose(out.double(), expect, atol=1e-5)


def _oracle_attention(blk, query, tokens):
    """The attention output (after proj) of ``query`` over ``[query, tokens]``, by hand per head."""
    u = blk.norm1(torch.cat([query[None], tokens]))
    a = blk.attn
    q, k, v = a.q(u[0]), a.k(u), a.v(u)
    h, d = a.num_heads, q.shape[0] // a.num_heads
    outs = []
    for i in range(h):
        s = slice(i * d, (i + 1) * d)
        p = torch.softmax(k[:, s] @ q[s] / math.sqrt(d), 0)
        outs.append(p @ v[:, s])
    return a.proj(torch.cat(outs))


# ---------------------------------------------------------------------------------------------
# the released code's behaviours, on small hand-made cases


def test_query_batch_mixup_takes_the_mean_of_another_image():
    head = NeighbourAggregationHead(4, 1, query="image_mean", query_batch_mixup=True, wrap=True)
    x = torch.cat([torch.full((1, 9, 4), 1.0), torch.full((1, 9, 4), 5.0)])  # image 0: all 1, image 1: all 5
    nbrs = torch.zeros(18, 4, 4)
    q = head.queries(x, nbrs, torch.ones(18, 4, dtype=torch.bool))[:, 0, 0]
    # row b * 9 + n takes image (b * 9 + n) mod 2
    assert q.tolist() == [1, 5, 1, 5, 1, 5, 1, 5, 1] + [5, 1, 5, 1, 5, 1, 5, 1, 5]
    head.query_batch_mixup = False
    q = head.queries(x, nbrs, torch.ones(18, 4, dtype=torch.bool))[:, 0, 0]
    assert q.tolist() == [1] * 9 + [5] * 9
    head.query = "neighbour_mean"  # the mean of the valid selected neighbours
    nb = torch.arange(18 * 4 * 4, dtype=torch.float).reshape(18, 4, 4)
    valid = torch.tensor([[True, True, True, False]] * 18)
    assert torch.equal(head.queries(x, nb, valid)[:, 0], nb[:, :3].mean(1))


def test_wrap_takes_neighbours_from_the_opposite_edge():
    # 3 x 3 grid; the top-left token (0) points the same way as the bottom-right one (8) only
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 9, 8, generator=g)
    x[0, 8] = 2 * x[0, 0]
    for i in (1, 3, 4):
        x[0, i] = -x[0, 0] + 0.1 * torch.randn(8, generator=g)
    clipped_best = max((1, 3, 4), key=lambda j: float(F.cosine_similarity(x[0, 0], x[0, j], 0)))
    for wrap, best in ((False, clipped_best), (True, 8)):
        head = _randomise(NeighbourAggregationHead(8, 2, top_k=1, wrap=wrap), 1)
        out = head(x, grid=(3, 3))[0, 0].double()
        assert torch.allclose(out, _oracle(head, x[0, best], x[0, [best]]), atol=1e-5), wrap
        assert not torch.allclose(out, _oracle(head, x[0, 8 + clipped_best - best], x[0, [8 + clipped_best - best]]),
                                  atol=1e-3)


def test_loss_flag_smooth_l1_or_l2():
    from jepa_image.dmtjepa import DMTJEPAConfig, build_model

    cfg = DMTJEPAConfig()
    cfg.model.encoder, cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads = "custom", 16, 1, 2
    cfg.model.patch_size, cfg.data.image_size, cfg.model.pred_depth, cfg.model.pred_emb_dim = 4, 12, 1, 8
    z, h = torch.tensor([0.5, 2.0]), torch.zeros(2)
    assert cfg.model.loss == "l2" and float(build_model(cfg).loss_fn(z, h)) == pytest.approx((0.25 + 4) / 2)
    cfg.model.loss = "smooth_l1"  # Huber, beta 1: 0.5 d^2 below 1, |d| - 0.5 above
    assert float(build_model(cfg).loss_fn(z, h)) == pytest.approx((0.125 + 1.5) / 2)


def test_released_state_dict_names_convert():
    head = NeighbourAggregationHead(8, 2)
    released = {("module.cls_blocks." + k[len("blocks."):] if k.startswith("blocks.") else "module." + k): v
                for k, v in head.state_dict().items()}
    assert any(k.startswith("module.cls_blocks.1.mlp.fc2") for k in released)
    back = convert_released_state_dict(released)
    assert back.keys() == head.state_dict().keys()
    NeighbourAggregationHead(8, 2).load_state_dict(back)


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_window_top_k_and_grid_name_the_fix():
    with pytest.raises(ConfigError, match=r"top_k=9 .* 8 neighbours of a 3x3 window.*top_k <= 8.*window=5"):
        NeighbourAggregationHead(8, 2, top_k=9)
    with pytest.raises(ConfigError, match="odd and at least 3"):
        NeighbourAggregationHead(8, 2, window=4)
    with pytest.raises(ConfigError, match="needs query='image_mean'"):
        NeighbourAggregationHead(8, 2, query_batch_mixup=True)
    head = NeighbourAggregationHead(8, 2, window=5)
    with pytest.raises(ConfigError, match=r"5x5 neighbour window does not fit the 3x7 token grid: use a window of at most 3"):
        head(torch.randn(1, 21, 8), grid=(3, 7))
    with pytest.raises(ValueError, match="a 4x4 grid has 16 tokens, the input has 15"):
        NeighbourAggregationHead(8, 2)(torch.randn(1, 15, 8), grid=(4, 4))


@pytest.mark.parametrize("query,mixup,wrap", [("neighbour_mean", False, False), ("image_mean", True, True)])
def test_rows_subset_equals_those_rows_of_the_full_output(query, mixup, wrap):
    torch.manual_seed(6)
    head = _randomise(NeighbourAggregationHead(12, 3, query=query, query_batch_mixup=mixup, wrap=wrap), 7)
    x = torch.randn(3, 30, 12)
    rows = torch.randint(0, 30, (3, 11), generator=torch.Generator().manual_seed(8))  # repeats allowed
    full = head(x, grid=(5, 6))
    part = head(x, grid=(5, 6), rows=rows)
    assert part.shape == (3, 11, 12)
    assert torch.allclose(part, torch.gather(full, 1, rows[..., None].expand(-1, -1, 12)), atol=1e-6)
