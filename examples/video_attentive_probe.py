"""An attentive probe on your own video folder: frozen V-JEPA tokens of every clip, then
jepa-eval's attentive probes (a small lr x wd grid trained in parallel, the best chosen on a
validation split).

    python examples/video_attentive_probe.py --videos my_videos/ --weights vjepa2_vitl16 --epochs 20
    python examples/video_attentive_probe.py            # made-up clips and a tiny random encoder

The folder layout is one sub-folder per class, `my_videos/<class>/<video>.mp4` (any format
the decoder reads; jepa_video.VideoFolder). Without --videos, moving-sprite clips from
jepa-video's demo generator are sorted into `right/` and `left/` (the direction of motion) in a
temporary folder. Without --weights, the encoder is a tiny randomly initialised V-JEPA ViT:
the numbers then only show that the pipeline runs; with a released name
(`jepa_core.hub.list_pretrained()`) or a checkpoint, they measure that encoder.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
from pathlib import Path

import torch


def make_video_folder(folder: Path, clips: int = 80, frames: int = 16, size: int = 32) -> Path:
    """Demo clips sorted into ``folder/<direction>/`` for two directions: your own folder's shape."""
    from jepa_video import make_demo_videos

    raw = folder / ".raw"
    make_demo_videos(raw, clips, frames=frames, size=size, sprite_size=12, seed=0)
    with open(raw / "meta.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["direction_name"] in ("right", "left"):
                (folder / row["direction_name"]).mkdir(parents=True, exist_ok=True)
                shutil.move(str(raw / row["path"]), folder / row["direction_name"] / row["path"])
    shutil.rmtree(raw)
    return folder


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", help="a folder <class>/<video> (default: made-up clips in a temporary folder)")
    p.add_argument("--weights", help="released V-JEPA / V-JEPA 2 weights: a name, Hugging Face id or file "
                   "(default: a tiny random encoder)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip")
    p.add_argument("--frame-step", type=int, default=2)
    p.add_argument("--size", type=int, default=32, help="crop size (released models: 224 or 256)")
    p.add_argument("--epochs", type=int, default=2, help="probe epochs (V-JEPA 2: 20)")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)

    from jepa_eval.attentive import extract_tokens, train_attentive_probes
    from jepa_video import ClipSampler, VideoEvalTransform, VideoFolder

    tmp = None
    if args.videos is None:
        tmp = Path(tempfile.mkdtemp(prefix="jepa-videos-"))
        args.videos = make_video_folder(tmp)

    # The encoder: released weights, or a tiny V-JEPA ViT built from the demo config.
    if args.weights:
        from jepa_video import from_pretrained

        encoder = from_pretrained(args.weights)
    else:
        from jepa_video import vjepa

        cfg = vjepa.VJEPA_SPEC.load_config("demo", overrides=[
            f"data.crop_size={args.size}", f"data.frames_per_clip={args.frames}", "model.embed_dim=32",
            "model.depth=1", "model.num_heads=2"])
        torch.manual_seed(0)
        encoder = vjepa.build_encoder(cfg)
    heads = getattr(encoder, "num_heads", 16)

    # Your folder: a clip per video (the official sampling), resized and centre-cropped.
    dataset = VideoFolder(args.videos, sampler=ClipSampler(frames_per_clip=args.frames, frame_step=args.frame_step),
                          transform=VideoEvalTransform(args.size, args.size))
    print(f"{len(dataset)} videos in {len(dataset.classes)} classes: {', '.join(dataset.classes)}")

    # Frozen tokens of every clip, computed once: [N, tokens, width].
    tokens, labels = extract_tokens(encoder, dataset, batch_size=args.batch_size)
    print(f"tokens {tuple(tokens.shape)}")

    # Every other clip for validation (a real folder would also keep a test split).
    train, val = torch.arange(len(labels)) % 2 == 0, torch.arange(len(labels)) % 2 == 1
    result = train_attentive_probes(
        tokens[train], labels[train], tokens[val], labels[val], lrs=[1e-3, 3e-4], wds=[0.01],
        num_heads=heads, depth=1, form="vjepa", epochs=args.epochs, batch_size=args.batch_size,
    )
    print(f"attentive probe: validation accuracy {result.val_accuracy:.1f} % (best lr, wd {result.best}; "
          f"{result.steps} steps in {result.seconds:.1f} s)")
    if tmp is not None:
        shutil.rmtree(tmp)
    return {"videos": len(dataset), "tokens": tuple(tokens.shape), "val_accuracy": result.val_accuracy}


if __name__ == "__main__":
    main()
