"""Our vectorised collators against the official ones: same output statistics.

Runs only with official checkouts (never bundled, CC-BY-NC), e.g.
``JEPA_OFFICIAL_IJEPA=/tmp/official/ijepa JEPA_OFFICIAL_JEPA=/tmp/official/jepa
JEPA_OFFICIAL_VJEPA2=/tmp/official/vjepa2 pytest benchmarks/tests/test_official_masks.py``;
skipped otherwise. Our own statistics tests are in packages/jepa-core/tests/test_core_masks.py and
packages/jepa-video/tests/test_video_masks.py.
"""

from __future__ import annotations

import os
from collections import Counter

import official as O  # benchmarks/official.py (conftest.py puts benchmarks/ on the path)
import pytest
import torch
from jepa_core.masks import MultiBlockMaskCollator, MultiBlockMaskConfig

jepa_video_masks = pytest.importorskip("jepa_video.masks")
VJEPA_MASK_CONFIGS = jepa_video_masks.VJEPA_MASK_CONFIGS
MultiBlock3DMaskCollator = jepa_video_masks.MultiBlock3DMaskCollator


def _path(var: str) -> str:
    path = os.environ.get(var)
    if not path:
        pytest.skip(f"set {var} to an official checkout to compare against it")
    return path


def _boxes(idx: torch.Tensor, grid_w: int) -> list[tuple[int, int]]:
    """(height, width) of the bounding box of each row's token indices."""
    r, c = idx // grid_w, idx % grid_w
    return list(zip((r.amax(1) - r.amin(1) + 1).tolist(), (c.amax(1) - c.amin(1) + 1).tolist()))


def _tv(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def _close(x: float, y: float, rel: float) -> bool:
    return abs(x - y) <= rel * max(abs(x), abs(y))


def test_ijepa_collator_statistics_match_official():
    theirs = O.ijepa_mask_collator(_path("JEPA_OFFICIAL_IJEPA"), 224, 16)
    ours = MultiBlockMaskCollator(MultiBlockMaskConfig(), 224, 16, seed=3)
    samples = [(torch.zeros(1), 0) for _ in range(16)]
    torch.manual_seed(0)  # the official positions come from the global generator
    stats = {"ours": ([], [], Counter(), []), "official": ([], [], Counter(), [])}
    for _ in range(400):
        for name, (ctx, tgt) in (("ours", [(o := ours(samples))["masks_enc"], o["masks_pred"]]),
                                 ("official", theirs(samples)[1:])):
            k_ctx, k_tgt, boxes, max_rc = stats[name]
            k_ctx.append(ctx[0].shape[1])
            k_tgt.append(tgt[0].shape[1])
            boxes.update(_boxes(tgt[0][:1], 14))  # one target size per batch
            allm = torch.cat(ctx + tgt, 1)
            max_rc.append(max(int((allm // 14).max()), int((allm % 14).max())))
    (oc, ot, ob, orc), (tc, tt, tb, trc) = stats["ours"], stats["official"]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert _close(mean(oc), mean(tc), 0.05), (mean(oc), mean(tc))  # kept context tokens (batch minimum)
    assert _close(mean(ot), mean(tt), 0.03), (mean(ot), mean(tt))  # target tokens per block
    assert set(ob) == set(tb) and _tv(ob, tb) < 0.12, (ob, tb)  # target block-size histogram
    assert max(orc) == max(trc) == 12  # neither ever uses the last row or column (the official bound)


@pytest.mark.parametrize("key,var,img", [("jepa", "JEPA_OFFICIAL_JEPA", 224), ("vjepa2", "JEPA_OFFICIAL_VJEPA2", 256)])
def test_video_collator_statistics_match_official(key, var, img):
    theirs = O.video_mask_collator(key, _path(var), img)
    ours = MultiBlock3DMaskCollator(VJEPA_MASK_CONFIGS, img, 16, 16, 2, seed=5)
    batch = 24
    samples = [(torch.zeros(1), 0) for _ in range(batch)]
    tsamples = [(torch.zeros(1), 0, [list(range(16))]) for _ in range(batch)] if key == "vjepa2" else samples
    torch.manual_seed(0)
    g = img // 16
    res = {n: {"ctx": [[], []], "tgt": [[], []], "box": [Counter(), Counter()]} for n in ("ours", "official")}
    for _ in range(150):
        o = ours(samples)
        t = theirs(tsamples)
        _, t_enc, t_pred = t[0] if key == "vjepa2" else t
        for name, enc, pred in (("ours", o["masks_enc"], o["masks_pred"]), ("official", t_enc, t_pred)):
            for i in range(2):
                res[name]["ctx"][i].append(enc[i].shape[1])
                res[name]["tgt"][i].append(pred[i].shape[1])
                first = pred[i][pred[i] < g * g].view(-1)  # frame-0 target tokens of the batch
                res[name]["box"][i][int(first.numel() > 0)] += 1
                assert enc[i].shape[0] == pred[i].shape[0] == batch
                # context and target disjoint, both sorted
                assert not (enc[i][:, :, None] == pred[i][:, None, :]).any()
                assert (enc[i].diff(dim=1) > 0).all() and (pred[i].diff(dim=1) > 0).all()
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    for i in range(2):
        for what in ("ctx", "tgt"):
            a, b = mean(res["ours"][what][i]), mean(res["official"][what][i])
            assert _close(a, b, 0.06), (key, i, what, a, b)
