"""Official attentive-probe checkpoints load into AttentiveClassifier with parity (issue #5).

The fixtures were made by the official probe classes (jepa:src/models/attentive_pooler.py and
vjepa2:src/models/attentive_pooler.py, imported by scripts/make_pretrained_fixtures.py): width
32, 4 heads, 5 classes, every tensor perturbed, saved as the eval scripts save them (V-JEPA:
``classifier``, depth 1 with the unused ``xattn.proj``; V-JEPA 2: ``classifiers``, two probes of
depth 4), with ``module.`` prefixes, plus tokens and the official logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jepa_core.pretrained import PretrainedError
from jepa_eval import load_official_probe

FIX = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name, count, form, depth", [("vjepa_probe_tiny.pth.tar", 1, "vjepa", 1),
                                                      ("vjepa2_probe_tiny.pt", 2, "vjepa2", 4)])
@torch.no_grad()
def test_official_probes_give_the_official_logits(name, count, form, depth):
    io = torch.load(FIX / (name.split(".")[0] + "_io.pt"), weights_only=True)
    for i in range(count):
        probe = load_official_probe(FIX / name, index=i, num_heads=4)
        info = probe.pretrained_info
        assert info.arch == dict(form=form, embed_dim=32, num_heads=4, depth=depth, num_classes=5, mlp_ratio=4.0)
        assert (probe(io["tokens"]) - io["logits"][i]).abs().max().item() < 1e-5
    if count > 1:  # the probes differ, so the index matters
        assert (io["logits"][0] - io["logits"][1]).abs().max() > 1e-3


def test_probe_errors(tmp_path):
    with pytest.raises(PretrainedError, match="holds 2 probes.*index 5"):
        load_official_probe(FIX / "vjepa2_probe_tiny.pt", index=5, num_heads=4)
    torch.save({"encoder": {}}, tmp_path / "enc.pt")
    with pytest.raises(PretrainedError, match="not an attentive-probe checkpoint"):
        load_official_probe(tmp_path / "enc.pt")
    obj = torch.load(FIX / "vjepa_probe_tiny.pth.tar", weights_only=True)
    del obj["classifier"]["module.pooler.cross_attention_block.norm2.weight"]
    torch.save(obj, tmp_path / "cut.pth.tar")
    with pytest.raises(PretrainedError, match="missing keys: pooler.cross_attention_block.norm2.weight"):
        load_official_probe(tmp_path / "cut.pth.tar", num_heads=4)
    # The head count is not stored: the official 16 is assumed and said so.
    probe = load_official_probe(FIX / "vjepa_probe_tiny.pth.tar")
    assert probe.pretrained_info.arch["num_heads"] == 16
    assert any("assumed the official 16" in n for n in probe.pretrained_info.notes)
