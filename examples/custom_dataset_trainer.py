"""I-JEPA on your own images with the `Trainer`, then the run loaded back.

Your data is any map-style `torch.utils.data.Dataset` whose items are `(image tensor [C, H, W],
label)`; the I-JEPA parts come from jepa-image (model, multi-block mask collator) and
jepa-core (`Trainer`). Passing `config=cfg` to the Trainer makes the checkpoints first-class:
they carry the method and its config, `<run>/config.yaml` is written, and
`jepa_core.run.load_run`, `jepa eval` and `jepa convert` rebuild the model from them.

    python examples/custom_dataset_trainer.py --images path/to/folder --steps 1000 --image-size 64
    python examples/custom_dataset_trainer.py                   # a tiny run on made-up images

Without --images, 64 small PNGs of coloured shapes are drawn into <run dir>/made-up-images.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset


class MyImages(Dataset):
    """Every image file under a folder (no labels needed: I-JEPA is self-supervised)."""

    def __init__(self, folder: str | Path, transform):
        self.files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not self.files:
            raise FileNotFoundError(f"no .png / .jpg images under {folder}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB")), 0  # the label is unused by pretraining


def draw_shapes(folder: Path, n: int, size: int = 48, seed: int = 0) -> Path:
    """``n`` PNGs of random ellipses and rectangles: stand-ins for your own photos."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.new("RGB", (size, size), tuple(torch.randint(0, 80, (3,), generator=g).tolist()))
        d = ImageDraw.Draw(im)
        for _ in range(3):
            x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            w, h = torch.randint(size // 6, size // 2, (2,), generator=g).tolist()
            colour = tuple(torch.randint(100, 256, (3,), generator=g).tolist())
            (d.ellipse if torch.rand(1, generator=g) < 0.5 else d.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour)
        im.save(folder / f"img_{i:05d}.png")
    return folder


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", help="a folder of .png / .jpg images (default: made-up shapes)")
    p.add_argument("--run-dir", help="the run folder (default: a new temporary folder)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps (the whole schedule: one epoch of this many)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--width", type=int, default=32, help="encoder width (embed_dim)")
    p.add_argument("--depth", type=int, default=2, help="encoder depth")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = p.parse_args(argv)

    from jepa_core.run import load_run
    from jepa_core.trainer import Trainer
    from jepa_image import ijepa
    from jepa_image.data import IMAGENET_MEAN, IMAGENET_STD, pretrain_transform

    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="ijepa-custom-"))
    images = Path(args.images) if args.images else draw_shapes(run_dir / "made-up-images", 64)

    # 1. The config: the demo preset's recipe at your sizes. Every key: `jepa config ijepa --explain`.
    cfg = ijepa.SPEC.load_config("demo", overrides=[
        "data.dataset=imagefolder", f"data.root={images}", f"data.image_size={args.image_size}",
        f"data.mean={list(IMAGENET_MEAN)}", f"data.std={list(IMAGENET_STD)}", f"data.batch_size={args.batch_size}",
        "model.in_chans=3", "model.patch_size=4", f"model.embed_dim={args.width}", f"model.depth={args.depth}",
        "model.num_heads=2", "model.pred_depth=1", f"model.pred_emb_dim={max(args.width // 2, 8)}",
        "model.pred_num_heads=2", "optim.epochs=1", f"optim.ipe={args.steps}", "optim.warmup=0",
        f"train.device={args.device}", "train.progress=false", "train.log_every=1",
        f"train.checkpoint_every={args.steps}",
    ])
    # 2. Your dataset, with I-JEPA's pretraining transform (random resized crop, normalise).
    d = cfg.data
    dataset = MyImages(images, pretrain_transform(d.image_size, d.crop_scale, d.mean, d.std))
    # 3. The I-JEPA model and its multi-block mask collator (masks drawn from (seed, step)).
    model = ijepa.build_model(cfg)
    collate = ijepa.train_collate(cfg)
    # 4. Train. config=cfg: the checkpoints carry the method and config; config.yaml is written.
    trainer = Trainer(model, dataset, collate, cfg.optim, cfg.train, run_dir, d.batch_size, config=cfg)
    result = trainer.fit()
    print(f"trained on {len(dataset)} images: {result.steps} steps, final loss {result.final_loss:.4f}, run in {run_dir}")

    # 5. Load the run back (as `jepa eval` does): the model is rebuilt from the checkpoint's config.
    run = load_run(run_dir)
    encoder = run["model"].eval_encoder()
    with torch.no_grad():
        x = torch.stack([dataset[i][0] for i in range(4)])
        features = encoder(x).mean(1)  # mean-pooled tokens: what the frozen probes use
    print(f"load_run: method {run['spec'].name}, step {run['step']}, features {tuple(features.shape)}")
    print(f"next: jepa eval {run_dir} --protocol knn   |   jepa convert {run_dir}/checkpoints/latest.pt weights.safetensors --to safetensors")
    return {"run_dir": str(run_dir), "step": run["step"], "features": tuple(features.shape)}


if __name__ == "__main__":
    main()
