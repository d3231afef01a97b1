"""The ``flow`` evaluator (entry point ``jepa.evaluators``): optical flow and content of a method
that predicts flow (MC-JEPA).

``eval.protocols`` may hold ``flow`` beside the probes' protocols (``linear``, ``knn``, ...):
the probes run on ``model.eval_encoder()`` as usual (content), then the flow protocol scores
``model.predict_flow(frame_t, frame_t1)`` (``[B, 2, H, W]`` at the frames' resolution) on
``(frame_t, frame_t1, flow, ...)`` pairs: the method's held-out pairs
(``spec.extra["flow_eval_data"](cfg)``), or a Sintel / KITTI folder given as
``data.flow_root`` (:class:`jepa_eval.flow.FlowFolder`). Rows: the pretrained model, a
randomly initialised one (``train.seed + 1``, as the probes), and two baselines through the
same accumulator: zero flow and the training pairs' mean flow vector
(``spec.extra["train_flow_data"](cfg)``; without it, the evaluated pairs' own mean, marked
as an oracle). Metrics: :func:`jepa_eval.flow.flow_metrics` (EPE all / non-occluded /
occluded, Fl-all, 1/3/5 px accuracy); a PNG of predicted against true flow.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import torch
from jepa_core.config import ConfigError

from jepa_eval.flow import (
    FlowFolder,
    FlowMetricAccumulator,
    mean_flow,
    mean_flow_baseline,
    plot_flows,
    zero_flow_baseline,
)
from jepa_eval.pretrain import check_config as check_probes_config
from jepa_eval.pretrain import evaluate_encoders

log = logging.getLogger(__name__)

METRICS = ("epe", "epe_noc", "epe_occ", "fl_all", "px1", "px3", "px5")


def _probe_cfg(cfg):
    """``cfg`` with ``flow`` taken out of ``eval.protocols`` (None when nothing else is left)."""
    others = [p for p in cfg.eval.protocols if p != "flow"]
    if not others:
        return None
    probe = copy.deepcopy(cfg)
    probe.eval.protocols = others
    return probe


def check_config(cfg) -> None:
    probe = _probe_cfg(cfg)
    if probe is not None:
        check_probes_config(probe)


def _pairs(spec, cfg):
    root = getattr(cfg.data, "flow_root", None)
    if root:
        return FlowFolder(root), f"{root}"
    make = spec.extra.get("flow_eval_data")
    if make is None:
        raise ConfigError(f"method {spec.name!r} gives no flow evaluation pairs (MethodSpec.extra['flow_eval_data']); "
                          "set data.flow_root to a Sintel or KITTI folder")
    return make(cfg), "held-out synthetic pairs"


def _items(dataset, batch_size: int):
    """Batches ``(frame_t, frame_t1, flow, valid, occluded or None)`` of a pair dataset whose items
    are ``(img1, img2, flow, valid)`` (FlowFolder: valid is a bool map) or ``(img1, img2, flow,
    occluded)`` (the synthetic pairs: every pixel valid)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    occlusion = not isinstance(dataset, FlowFolder)
    for a, b, flow, mask in loader:
        mask = mask.bool()
        if occlusion:
            yield a.float(), b.float(), flow.float(), torch.ones_like(mask), mask
        else:
            yield a.float(), b.float(), flow.float(), mask, None


def _ground_truth(dataset, batch_size: int = 64):
    """``(flow, valid, occluded)`` batches: the items :mod:`jepa_eval.flow`'s baselines take."""
    return ((gt, valid, occ) for _, _, gt, valid, occ in _items(dataset, batch_size))


def _rounded(metrics: dict) -> dict:
    return {k: (None if v is None else round(float(v), 4)) for k, v in metrics.items() if k in METRICS}


@torch.no_grad()
def score_flow(predict, dataset, device, batch_size: int = 16) -> dict:
    """Metrics of ``predict(frame_t, frame_t1) -> flow`` over the dataset."""
    acc = FlowMetricAccumulator()
    for a, b, gt, valid, occ in _items(dataset, batch_size):
        acc.update(predict(a.to(device), b.to(device)).float().cpu(), gt, valid, occ)
    return _rounded(acc.compute())


def evaluate_flow(spec, cfg, model, device="cpu", out_dir=None, run_dir=None) -> dict:
    """The probes on the content features (the protocols other than ``flow``), then the flow
    table (see the module docstring)."""
    device = torch.device(device)
    probe_cfg = _probe_cfg(cfg)
    out = (evaluate_encoders(spec, probe_cfg, model, device, out_dir=out_dir, run_dir=run_dir)
           if probe_cfg is not None else None) or {"results": {}, "markdown": ""}
    if "flow" not in cfg.eval.protocols:
        return out
    t0 = time.perf_counter()
    pairs, source = _pairs(spec, cfg)
    rows: dict[str, dict] = {}
    model.eval()
    rows["pretrained"] = score_flow(model.predict_flow, pairs, device)
    log.info("flow of the pretrained model: EPE %.3f px", rows["pretrained"]["epe"] or float("nan"))
    if cfg.eval.random_baseline:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.train.seed + 1)
            fresh = spec.build_model(cfg).to(device).eval()
        rows["random init"] = score_flow(fresh.predict_flow, pairs, device)
        del fresh
    rows["zero flow"] = _rounded(zero_flow_baseline(_ground_truth(pairs)))
    train = None if getattr(cfg.data, "flow_root", None) else spec.extra.get("train_flow_data")
    mean = mean_flow(_ground_truth(pairs if train is None else train(cfg)))
    name = "mean flow (training pairs)" if train is not None else "mean flow (oracle: the evaluated pairs' mean)"
    rows[name] = _rounded(mean_flow_baseline(_ground_truth(pairs), mean))
    results = {"rows": rows, "source": source, "pairs": len(pairs), "seconds": round(time.perf_counter() - t0, 1)}
    png = None
    if out_dir is not None:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        png = folder / "flow.png"
        a, b, gt, valid, _ = next(_items(pairs, 4))
        plot_flows(a, gt, model.predict_flow(a.to(device), b.to(device)).cpu(), png, valids=valid)
    section = flow_markdown(results, None if png is None else f"eval/{png.name}")
    out["results"]["flow"] = results
    out["markdown"] = "\n\n".join(p for p in (out["markdown"], section) if p)
    if out_dir is not None:
        (folder / "flow.json").write_text(json.dumps(results, indent=2))
        (folder / "results.json").write_text(json.dumps(out["results"], indent=2))
        md = folder / "results.md"
        md.write_text((md.read_text().rstrip("\n") + "\n\n" if md.exists() else "# Evaluation\n\n") + section + "\n")
    return out


evaluate_flow.check_config = check_config  # type: ignore[attr-defined]


def flow_markdown(results: dict, image_link: str | None = None) -> str:
    def f(v, pct=False):
        return "-" if v is None else (f"{v:.2f}" if not pct else f"{100 * v:.1f}")

    lines = ["### Optical flow", "",
             "| row | EPE (px) | EPE non-occl. | EPE occl. | Fl-all (%) | < 1 px (%) | < 3 px (%) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row, r in results["rows"].items():
        lines.append(f"| {row} | {f(r['epe'])} | {f(r['epe_noc'])} | {f(r['epe_occ'])} | {f(r['fl_all'])} | "
                     f"{f(r['px1'], True)} | {f(r['px3'], True)} |")
    lines += ["", f"{results['pairs']} frame pairs ({results['source']}); end-point error in pixels; Fl-all: "
              "EPE > 3 px and > 5 % of the true flow's length."]
    if image_link:
        lines += ["", f"![Predicted vs true flow]({image_link})"]
    return "\n".join(lines)
