"""Sample quality of a class-conditional generative method (D-JEPA, MAR): the ``sample_quality``
evaluator.

What it measures, on images the method generates for every class:

- **class accuracy**: the fraction of generated images that a small CNN, trained on the real
  training images, assigns to the class they were generated for (chance: 1 / classes);
- **Frechet distance (FD)** between the CNN's penultimate features of the generated images and
  of the real held-out images (the FID recipe with a classifier of the run's own data in place
  of Inception); beside it, the FD of as many real *training* images against the same held-out
  set: the floor that sampling noise alone gives at this sample size;
- optionally the **linear probe** of the method's frozen encoder (``model.eval_encoder()``)
  against a randomly initialised one, as the ``probes`` evaluator computes it;
- optionally the standard **Inception FID** (torchmetrics' ``FrechetInceptionDistance``, 2048-d
  pool features; ``pip install 'jepa-eval[fid]'``, which also downloads the Inception weights
  on first use), against the held-out images.

The CNN is trained once per run and cached in ``<run>/eval_classifier.pt`` (keyed by the data
and its settings), so a later `jepa eval` scores new samples against the same classifier.

What the method provides: ``spec.build_eval_data(cfg) -> (train, test)`` of ``(image, label)``
with images in the space the method generates in; ``model.generate(labels, steps=, cfg=,
temperature=, cfg_schedule=, generator=) -> images`` ``[B, C, H, W]``; the config sections
``sample`` (steps, cfg, temperature, cfg_schedule, batch_size) and ``sample_eval``
(:class:`jepa_image.djepa.SampleEvalConfig`: per_class, classifier_epochs,
classifier_batch_size, probe, probe_samples, inception, inception_samples) and
``data.num_classes``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from jepa_core.config import ConfigError
from torch import nn

log = logging.getLogger(__name__)

FID_EXTRA_HINT = "pip install 'jepa-eval[fid]' (torchmetrics' FrechetInceptionDistance with torch-fidelity)"
CLASSIFIER_FILE = "eval_classifier.pt"

# ---------------------------------------------------------------------------------------------
# Frechet distance


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of ``features [N, D]``, in float64."""
    x = features.double()
    if len(x) < 2:
        raise ValueError("the Frechet distance needs at least 2 samples per set")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (len(x) - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``: the squared 2-Wasserstein distance of two
    Gaussians. ``tr (S1 S2)^(1/2)`` is computed as the trace of ``(S1^(1/2) S2 S1^(1/2))^(1/2)``
    (the same eigenvalues, and a symmetric matrix), in float64, so it needs no scipy."""
    mu1, mu2, s1, s2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    r1 = _sqrt_psd(s1)
    eig = torch.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_sqrt = eig.clamp_min(0).sqrt().sum()
    fd = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return float(fd.clamp_min(0))


def frechet_distance_of(features1: torch.Tensor, features2: torch.Tensor) -> float:
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


# ---------------------------------------------------------------------------------------------
# the classifier


class SmallCNN(nn.Module):
    """conv(32)-conv(32)-pool-conv(64)-conv(64)-pool-linear(128): its 128 penultimate features
    embed images for the FD, its logits classify them."""

    feature_dim = 128

    def __init__(self, in_chans: int, num_classes: int):
        super().__init__()

        def conv(a, b):
            return [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()]

        self.body = nn.Sequential(*conv(in_chans, 32), *conv(32, 32), nn.MaxPool2d(2), *conv(32, 64), *conv(64, 64),
                                  nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                  nn.Linear(64 * 16, self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _stack(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs, ys = zip(*(dataset[i] for i in range(n)))
    return torch.stack([torch.as_tensor(x).float() for x in xs]), torch.as_tensor(ys).long()


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int = 3,
                     batch_size: int = 128, seed: int = 0, device: torch.device | str = "cpu") -> SmallCNN:
    """Adam (1e-3), cross-entropy, random horizontal shifts of up to 2 px, seeded."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallCNN(images.shape[1], num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(images), generator=g)
        for start in range(0, len(images), batch_size):
            idx = perm[start:start + batch_size]
            x, y = images[idx], labels[idx]
            shift = int(torch.randint(-2, 3, (1,), generator=g))
            x = torch.roll(x, shift, dims=-1).to(device)
            loss = F.cross_entropy(net(x), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def classify(net: SmallCNN, images: torch.Tensor, batch_size: int = 500, device="cpu"):
    """``(features [N, 128], predicted class [N])``."""
    net.eval()
    feats, preds = [], []
    for start in range(0, len(images), batch_size):
        f = net.features(images[start:start + batch_size].to(device))
        feats.append(f.float().cpu())
        preds.append(net.head(f).argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


def cached_classifier(run_dir: Path | None, train_x, train_y, num_classes: int, epochs: int, batch_size: int,
                      key: dict, device) -> tuple[SmallCNN, bool]:
    """The run's classifier: loaded from ``<run>/eval_classifier.pt`` when its key matches, else
    trained and saved there. Returns it and whether it came from the cache."""
    key = {**key, "epochs": epochs, "batch_size": batch_size, "num_classes": num_classes,
           "in_chans": int(train_x.shape[1]), "train_samples": len(train_x)}
    path = Path(run_dir) / CLASSIFIER_FILE if run_dir is not None else None
    if path is not None and path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if obj.get("key") == json.loads(json.dumps(key)):
                net = SmallCNN(train_x.shape[1], num_classes)
                net.load_state_dict(obj["model"])
                return net.to(device).eval(), True
            log.info("%s was trained for other data or settings; training a new classifier", path)
        except Exception as e:  # a torn or foreign file: train again
            log.warning("cannot read %s (%s); training a new classifier", path, e)
    net = train_classifier(train_x, train_y, num_classes, epochs, batch_size, device=device)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        torch.save({"key": key, "model": {k: v.cpu() for k, v in net.state_dict().items()}}, tmp)
        tmp.replace(path)
    return net, False


# ---------------------------------------------------------------------------------------------
# Inception FID (optional extra)


def _fid_metric():
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:
        raise ConfigError(f"sample_eval.inception=true needs torchmetrics with its image extra: {FID_EXTRA_HINT}; "
                          "or set sample_eval.inception=false") from e
    return FrechetInceptionDistance


def _to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def inception_fid(real: torch.Tensor, fake: torch.Tensor, device="cpu", batch_size: int = 100) -> float:
    """Inception FID of images in [-1, 1] (gray images repeated to RGB)."""
    metric = _fid_metric()(feature=2048, normalize=False).to(device)
    for images, is_real in ((real, True), (fake, False)):
        for start in range(0, len(images), batch_size):
            metric.update(_to_uint8_rgb(images[start:start + batch_size]).to(device), real=is_real)
    return float(metric.compute())


# ---------------------------------------------------------------------------------------------
# the evaluator


def check_config(cfg) -> None:
    """Before training: the config has the sections this evaluator reads, and the Inception
    extra is installed when asked for."""
    for section in ("sample", "sample_eval", "data"):
        if not hasattr(cfg, section):
            raise ConfigError(f"the sample_quality evaluator reads cfg.{section}, which method {cfg.method!r} does "
                              "not have; name another evaluator in its MethodSpec")
    if cfg.sample_eval.inception:
        _fid_metric()


def _generate(model, num_classes: int, per_class: int, s, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    out = []
    for i, start in enumerate(range(0, len(labels), s.batch_size)):
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + i)
        x = model.generate(labels[start:start + s.batch_size].to(device), steps=s.steps, cfg=s.cfg,
                           temperature=s.temperature, cfg_schedule=s.cfg_schedule, generator=g)
        out.append(x.float().cpu())
    return torch.cat(out), labels


def _write_grid(images: torch.Tensor, labels: torch.Tensor, path: Path, per_row: int = 10) -> Path:
    """One row per class, the first ``per_row`` images of each."""
    from PIL import Image

    rows = []
    for c in labels.unique().tolist():
        x = images[labels == c][:per_row]
        x = _to_uint8_rgb(x) if x.shape[1] in (1, 3) else _to_uint8_rgb(x[:, :1])
        x = F.pad(x, (1, 1, 1, 1), value=255)
        rows.append(torch.cat(list(x), dim=2))
    width = max(r.shape[2] for r in rows)
    rows = [F.pad(r, (0, width - r.shape[2]), value=255) for r in rows]
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def _probe(spec, cfg, model, train_set, test_set, device) -> dict:
    from jepa_eval.features import extract_features
    from jepa_eval.probes import linear_probe

    limit = cfg.sample_eval.probe_samples
    out = {}
    torch.manual_seed(cfg.train.seed + 1)
    random_model = spec.build_model(cfg).to(device)
    for name, m in (("ema_encoder", model), ("random_init", random_model)):
        enc = m.eval_encoder()
        tr = extract_features(enc, train_set, cfg.eval.batch_size, device, max_samples=limit, progress=False)
        te = extract_features(enc, test_set, cfg.eval.batch_size, device, progress=False)
        out[name] = round(linear_probe(tr[0], tr[1], te[0], te[1]).accuracy, 2)
    return out


def evaluate_sample_quality(spec, cfg, model, device="cpu", out_dir=None, run_dir=None) -> dict | None:
    """The ``sample_quality`` evaluator (see the module docstring)."""
    check_config(cfg)
    if spec.build_eval_data is None or spec.build_eval_data(cfg) is None:
        log.warning("sample_quality: method %s has no labelled images for this config; nothing to evaluate", spec.name)
        return None
    device = torch.device(device)
    se, s, k = cfg.sample_eval, cfg.sample, cfg.data.num_classes
    train_set, test_set = spec.build_eval_data(cfg)
    t0 = time.perf_counter()
    train_x, train_y = _stack(train_set)
    test_x, test_y = _stack(test_set)
    key = {"method": cfg.method, "dataset": getattr(cfg.data, "dataset", ""), "root": getattr(cfg.data, "root", None),
           "image_size": int(train_x.shape[-1])}
    clf, cached = cached_classifier(run_dir, train_x, train_y, k, se.classifier_epochs, se.classifier_batch_size,
                                    key, device)
    test_feats, test_pred = classify(clf, test_x, device=device)
    real_acc = 100.0 * (test_pred == test_y).double().mean().item()
    t_clf = time.perf_counter() - t0

    model.eval()
    t0 = time.perf_counter()
    fake_x, fake_y = _generate(model, k, se.per_class, s, cfg.train.seed, device)
    t_gen = time.perf_counter() - t0
    fake_feats, fake_pred = classify(clf, fake_x, device=device)
    n = len(fake_x)
    g = torch.Generator().manual_seed(cfg.train.seed)
    ref_idx = torch.randperm(len(train_x), generator=g)[:n]
    ref_feats, _ = classify(clf, train_x[ref_idx], device=device)
    per_class_acc = {int(c): round(100.0 * (fake_pred[fake_y == c] == c).double().mean().item(), 1)
                     for c in range(k)}
    results = {
        "class_accuracy": round(100.0 * (fake_pred == fake_y).double().mean().item(), 2),
        "chance": round(100.0 / k, 2),
        "fd_classifier": round(frechet_distance_of(fake_feats, test_feats), 4),
        "fd_classifier_real_floor": round(frechet_distance_of(ref_feats, test_feats), 4),
        "classifier_test_accuracy": round(real_acc, 2),
        "classifier_cached": cached,
        "per_class_accuracy": per_class_acc,
        "samples": n, "per_class": se.per_class, "steps": s.steps, "cfg": s.cfg, "temperature": s.temperature,
        "sampling_seconds": round(t_gen, 1), "classifier_seconds": round(t_clf, 1),
    }
    if se.inception:
        m = min(se.inception_samples, len(test_x), n)
        results["inception_fid"] = round(inception_fid(test_x[:m], fake_x[:m], device), 3)
    if se.probe:
        results["linear_probe"] = _probe(spec, cfg, model, train_set, test_set, device)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_grid(fake_x, fake_y, out_dir / "samples.png")
        torch.save({"images": _to_uint8_rgb(fake_x) if fake_x.shape[1] == 3 else
                    ((fake_x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8), "labels": fake_y},
                   out_dir / "samples.pt")
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    return {"results": results, "markdown": sample_quality_markdown(results), "title": "Sample quality"}


evaluate_sample_quality.check_config = check_config  # type: ignore[attr-defined]  # mypy: no attributes on functions


def sample_quality_markdown(r: dict) -> str:
    lines = [
        f"{r['samples']} generated images ({r['per_class']} per class; {r['steps']} steps, cfg {r['cfg']:g}, "
        f"temperature {r['temperature']:g}; {r['sampling_seconds']} s), scored by a small CNN trained on the real "
        f"training images ({r['classifier_test_accuracy']:.1f} % on the held-out images).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| class accuracy of the samples (chance {r['chance']:.0f} %) | {r['class_accuracy']:.1f} % |",
        f"| Frechet distance, CNN features, samples vs held-out | {r['fd_classifier']:.3f} |",
        f"| same, as many real training images vs held-out (floor) | {r['fd_classifier_real_floor']:.3f} |",
    ]
    if "inception_fid" in r:
        lines.append(f"| Inception FID vs held-out | {r['inception_fid']:.2f} |")
    if "linear_probe" in r:
        p = r["linear_probe"]
        lines.append(f"| linear probe, EMA encoder (random init) | {p['ema_encoder']:.1f} % ({p['random_init']:.1f} %) |")
    return "\n".join(lines)


__all__ = ["SmallCNN", "check_config", "classify", "evaluate_sample_quality", "feature_statistics",
           "frechet_distance", "frechet_distance_of", "inception_fid", "train_classifier"]
