"""D-JEPA, a generative JEPA: a few training steps on the bundled Fashion-MNIST sample, the run
loaded back, and a few images sampled from it (what `jepa sample <run>` does).

    python examples/generative_djepa.py --steps 3000 --width 96 --depth 3 --sample-steps 8 --num 8
    python examples/generative_djepa.py                # seconds: the images are noise, the calls are real

Sampling is set by set of tokens on a cosine schedule (`--sample-steps` forward passes), with
classifier-free guidance (`--cfg`), from the EMA copy of the model. The images land in
<run>/samples/: `class_<id>.png` grids and `samples.npz`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="optimizer steps (the whole schedule)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--classes", default="0,7", help="classes to sample, e.g. 0,3,5-7")
    p.add_argument("--num", type=int, default=2, help="images per class")
    p.add_argument("--sample-steps", type=int, default=2, help="token-set steps of the sampler")
    p.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance scale (>= 1)")
    p.add_argument("--run-dir", help="the run folder (default: a new temporary folder)")
    args = p.parse_args(argv)

    from jepa_core.run import load_run
    from jepa_core.trainer import Trainer
    from jepa_image import djepa

    cfg = djepa.SPEC.load_config("demo", overrides=[
        f"data.batch_size={args.batch_size}", f"model.embed_dim={args.width}", f"model.depth={args.depth}",
        "model.num_heads=2", f"model.decoder_embed_dim={args.width}", f"model.decoder_depth={args.depth}",
        "model.decoder_num_heads=2", "model.head_depth=1", f"model.head_width={2 * args.width}",
        "optim.epochs=1", f"optim.ipe={args.steps}", "optim.warmup=0", "train.device=cpu", "train.progress=false",
        "train.log_every=1", f"train.checkpoint_every={args.steps}",
    ])
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="djepa-"))
    torch.manual_seed(0)
    model = djepa.build_model(cfg)
    dataset, collate = djepa.build_train_data(cfg)
    result = Trainer(model, dataset, collate, cfg.optim, cfg.train, run_dir, cfg.data.batch_size, config=cfg).fit()
    print(f"D-JEPA: {result.steps} steps, final loss {result.final_loss:.4f}, run in {run_dir}")

    # Direct: images in [-1, 1] for given labels, from the EMA copy.
    with torch.no_grad():
        images = model.generate(torch.tensor([0, 1]), steps=args.sample_steps, cfg=args.cfg,
                                generator=torch.Generator().manual_seed(0))
    print(f"model.generate: {tuple(images.shape)}, values in [{images.min():.2f}, {images.max():.2f}]")

    # From the saved run, as `jepa sample <run> --classes ... --num ...` does.
    run = load_run(run_dir)
    summary = run["spec"].sample(run, out_dir=run_dir / "samples", classes=args.classes, num=args.num,
                                 steps=args.sample_steps, cfg_scale=args.cfg, seed=0, device="cpu")
    print(f"sampled {args.num} per class of {summary['classes']} -> {', '.join(summary['grids'])}")
    return {"steps": result.steps, "grids": summary["grids"], "npz": summary["npz"]}


if __name__ == "__main__":
    main()
