"""Load Meta's released attentive-probe checkpoints into :class:`jepa_eval.attentive.AttentiveClassifier`.

- V-JEPA probes (``jepa/{vitl16,vith16,vith16-384}/*-probe.pth.tar``; jepa:evals/video_classification_frozen/
  eval.py ``save_checkpoint``): key ``classifier``, one DDP state dict (``module.`` prefix) of a
  depth-1 pooler whose cross-attention keeps an unused ``xattn.proj`` (jepa:src/models/utils/modules.py).
- V-JEPA 2 probes (``vjepa2/evals/*.pt``; vjepa2:evals/video_classification_frozen/eval.py):
  key ``classifiers``, a list with one DDP state dict per probe of the lr x wd grid; the pooler
  runs ``depth - 1`` self-attention blocks (``pooler.blocks.{i}``) and one cross-attention block
  without ``proj`` (vjepa2:src/models/attentive_pooler.py, src/models/utils/modules.py). The demo notebook uses probe ``[0]``.

The form, depth, width, MLP ratio and class count come from the shapes; the head count is not
stored, so it defaults to the official evals' 16 (``num_heads: 16`` in every probe config) and
can be overridden.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from jepa_core import pretrained as P
from jepa_core.pretrained import PretrainedError

from jepa_eval.attentive import AttentiveClassifier, Form

log = logging.getLogger(__name__)

OFFICIAL_PROBE_HEADS = 16


def _probe_state(obj: dict, path: str, index: int) -> tuple[dict, str, int]:
    if isinstance(obj.get("classifiers"), (list, tuple)):
        probes = obj["classifiers"]
        if not -len(probes) <= index < len(probes):
            raise PretrainedError(f"{path!r} holds {len(probes)} probes (classifiers[0..{len(probes) - 1}]); "
                                  f"index {index} is out of range")
        return dict(probes[index]), "classifiers", len(probes)
    if isinstance(obj.get("classifier"), dict):
        if index not in (0, -1):
            raise PretrainedError(f"{path!r} holds one probe (classifier); index must be 0")
        return dict(obj["classifier"]), "classifier", 1
    if "pooler.query_tokens" in P.strip_prefixes(obj, ("module.",)):
        return dict(obj), "state_dict", 1
    keys = ", ".join(list(obj)[:10])
    raise PretrainedError(
        f"{path!r} is not an attentive-probe checkpoint: expected a `classifier` (V-JEPA) or `classifiers` "
        f"(V-JEPA 2) entry with pooler.* / linear.* weights; found {{{keys}}}"
    )


def load_official_probe(
    path: str | Path, index: int = 0, num_heads: int | None = None, device: str | torch.device = "cpu"
) -> AttentiveClassifier:
    """The attentive probe ``index`` of an official V-JEPA / V-JEPA 2 probe checkpoint.

    Returns an :class:`AttentiveClassifier` (tokens ``[B, N, D]`` -> logits) in eval mode;
    ``probe.pretrained_info`` says what was found. Never unpickles code (``weights_only``).
    """
    raw = P.read_checkpoint(path)
    sd, key, count = _probe_state(raw.obj, raw.path, index)
    sd = P.strip_prefixes(sd, ("module.",))
    q = P.shape_of(sd, "pooler.query_tokens", "attentive probe")
    dim = q[-1]
    classes = P.shape_of(sd, "linear.weight", "attentive probe")[0]
    blocks = P.block_count(sd, "pooler.blocks.")
    has_proj = "pooler.cross_attention_block.xattn.proj.weight" in sd
    form: Form = "vjepa" if has_proj and blocks == 0 else "vjepa2"
    hidden = P.shape_of(sd, "pooler.cross_attention_block.mlp.fc1.weight", "attentive probe")[0]
    heads = num_heads or OFFICIAL_PROBE_HEADS
    if dim % heads:
        raise PretrainedError(f"probe width {dim} is not divisible by {heads} heads; pass num_heads=")
    probe = AttentiveClassifier(dim, heads, classes, depth=blocks + 1, form=form,
                                mlp_ratio=P.mlp_ratio_for(dim, hidden))
    P.check_state_dict(P.expected_shapes(probe), sd, f"{form} attentive probe",
                       "is this an official V-JEPA / V-JEPA 2 probe checkpoint?")
    probe.load_state_dict(sd, strict=True)
    probe.to(device).eval()
    # torch's stubs type Module.__setattr__ values as Tensor | Module; any object is accepted at runtime
    probe.pretrained_info = P.LoadInfo(  # type: ignore[assignment]
        raw.path, "official-probe", form, which=f"{key}[{index}]" if key == "classifiers" else key,
        arch=dict(form=form, embed_dim=dim, num_heads=heads, depth=blocks + 1, num_classes=classes,
                  mlp_ratio=P.mlp_ratio_for(dim, hidden)),
        parts=(key,), notes=[f"{count} probe(s) in the file"] + ([] if num_heads else [
            f"head count not stored: assumed the official {OFFICIAL_PROBE_HEADS}"]),
    )
    log.info("%s", probe.pretrained_info.summary())
    return probe

