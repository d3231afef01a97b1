"""S-JEPA on skeleton sequences: a few training steps on synthetic actions, then a linear
probe of the frozen encoder beside a randomly initialised one.

    python examples/skeleton_sjepa.py --steps 2000 --train 2000 --test 500 --width 64 --depth 3
    python examples/skeleton_sjepa.py                  # seconds: the numbers only show it runs

The synthetic actions (jepa_skeleton.synthetic, no download) are NTU-shaped sequences
`[3, T, 25 joints, 2 persons]`; for NTU RGB+D itself use `data.dataset=npz data.path=...`
(`python -m jepa_skeleton.ntu` converts the raw files) and a preset such as `ntu60_xsub`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4, help="optimizer steps (the whole schedule)")
    p.add_argument("--train", type=int, default=96, help="synthetic training sequences")
    p.add_argument("--test", type=int, default=48, help="synthetic held-out sequences")
    p.add_argument("--window", type=int, default=16, help="frames per sequence after cropping")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--run-dir", help="the run folder (default: a new temporary folder)")
    args = p.parse_args(argv)

    from jepa_core.trainer import Trainer
    from jepa_eval.features import extract_features
    from jepa_eval.probes import linear_probe
    from jepa_skeleton import sjepa

    cfg = sjepa.SPEC.load_config("demo", overrides=[
        f"data.synthetic_train={args.train}", f"data.synthetic_test={args.test}",
        f"data.synthetic_frames={2 * args.window}", f"data.window={args.window}", f"data.min_crop={args.window}",
        f"data.batch_size={args.batch_size}", f"model.embed_dim={args.width}", f"model.depth={args.depth}",
        "model.num_heads=2", f"model.pred_dim={args.width}", "model.pred_depth=1", "model.pred_num_heads=2",
        "optim.epochs=1", f"optim.ipe={args.steps}", "optim.warmup=0", "train.device=cpu", "train.progress=false",
        "train.log_every=1", f"train.checkpoint_every={args.steps}",
    ])
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="sjepa-"))
    torch.manual_seed(0)
    model = sjepa.build_model(cfg)
    dataset, collate = sjepa.build_train_data(cfg)
    result = Trainer(model, dataset, collate, cfg.optim, cfg.train, run_dir, cfg.data.batch_size, config=cfg).fit()
    print(f"S-JEPA: {result.steps} steps, final loss {result.final_loss:.4f}, run in {run_dir}")

    # Linear probe on frozen, mean-pooled tokens: the EMA target encoder vs. a random init.
    train_set, test_set = sjepa.build_eval_data(cfg)
    accuracy = {}
    torch.manual_seed(1)
    for name, encoder in (("S-JEPA", model.eval_encoder()), ("random init", sjepa.build_model(cfg).eval_encoder())):
        xtr, ytr = extract_features(encoder, train_set, batch_size=32, progress=False)
        xte, yte = extract_features(encoder, test_set, batch_size=32, progress=False)
        accuracy[name] = linear_probe(xtr, ytr, xte, yte).accuracy
        print(f"linear probe, {name}: {accuracy[name]:.1f} % on {len(yte)} held-out sequences "
              f"({int(ytr.max()) + 1} classes, features {tuple(xtr.shape)})")
    return {"steps": result.steps, "accuracy": accuracy, "run_dir": str(run_dir)}


if __name__ == "__main__":
    main()
