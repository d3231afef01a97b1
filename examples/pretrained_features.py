"""Released I-JEPA weights to features: load an encoder by name, Hugging Face id or path, and
turn images into feature vectors (mean-pooled tokens, what the frozen probes use).

    python examples/pretrained_features.py --weights ijepa_vith14_in1k --images photos/ --out feats.pt
    python examples/pretrained_features.py            # the repository's tiny stand-in checkpoint

Names (`jepa_core.hub.list_pretrained()`) are downloaded once into ~/.cache/jepa (or
$JEPA_CACHE; offline with JEPA_OFFLINE=1); a Hugging Face id such as facebook/ijepa_vith14_1k
needs jepa-core[hub]. The default here is a small checkpoint in the official layout (the
test fixture packages/jepa-image/tests/fixtures/ijepa_tiny.pth.tar, 4 heads), so the example
runs offline in seconds; `--as-name` shows a name resolving from the cache, offline, the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = ROOT / "packages" / "jepa-image" / "tests" / "fixtures" / "ijepa_tiny.pth.tar"


def load_images(folder: str | None, size: int, n: int) -> torch.Tensor:
    """``[N, 3, size, size]``: the images of ``folder`` (resize, centre crop, ImageNet
    normalisation: the evaluation transform), or ``n`` random images without one."""
    if folder is None:
        return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    from jepa_image.data import eval_transform
    from PIL import Image

    tf = eval_transform(size)
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return torch.stack([tf(Image.open(f).convert("RGB")) for f in files])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(STAND_IN), help="a name, a Hugging Face id or a file (default: the stand-in)")
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads, for widths the official table does not know (the stand-in: 4)")
    p.add_argument("--as-name", metavar="NAME", help="stage --weights in a temporary cache under this released "
                   "name, then load it by name with downloads off (shows name resolution offline)")
    p.add_argument("--images", help="a folder of images (default: random images)")
    p.add_argument("--num-images", type=int, default=4)
    p.add_argument("--out", help="save {features, files} here (torch.save)")
    args = p.parse_args(argv)
    if args.num_heads is None and args.weights == str(STAND_IN):
        args.num_heads = 4

    from jepa_core.hub import get_weights, list_pretrained
    from jepa_image import from_pretrained

    print("released weights by name:", ", ".join(list_pretrained()))
    source = args.weights
    if args.as_name:  # what a real download leaves in the cache: <cache>/<name>/<official file name>
        w = get_weights(args.as_name)
        cache = Path(tempfile.mkdtemp(prefix="jepa-cache-"))
        (cache / w.name).mkdir()
        shutil.copy(args.weights, cache / w.name / str(w.filename))
        os.environ.update(JEPA_CACHE=str(cache), JEPA_OFFLINE="1")
        print(f"{w.name}: {w.description}; official file {w.url}; Hugging Face {w.hf_id}; staged in {cache}")
        source = w.name

    encoder = from_pretrained(source, num_heads=args.num_heads)  # the EMA target encoder, eval mode
    if args.as_name:
        shutil.rmtree(cache)
    info = encoder.pretrained_info
    print(info.summary())
    size = int(info.arch["img_size"])  # the resolution it was trained at (another: img_size=...)
    images = load_images(args.images, size, args.num_images)
    with torch.no_grad():
        tokens = encoder(images)                 # [N, tokens, width], no class token
        features = tokens.mean(1)                # [N, width]
    print(f"images {tuple(images.shape)} -> tokens {tuple(tokens.shape)} -> features {tuple(features.shape)}")
    if args.out:
        torch.save({"features": features, "weights": args.as_name or args.weights}, args.out)
        print(f"saved {args.out}")
    return {"tokens": tuple(tokens.shape), "features": tuple(features.shape)}


if __name__ == "__main__":
    main()
