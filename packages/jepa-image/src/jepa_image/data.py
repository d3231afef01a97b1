"""Image datasets and the official I-JEPA transforms.

- :class:`ImageFolder`: the ImageNet layout (``root/<split>/<class>/<image>``); a file that
  fails to decode raises :class:`jepa_core.data.CorruptSampleError`, which the trainer's loader
  skips and counts.
- Fashion-MNIST: the bundled stratified sample (``fashion_mnist_demo``, no download), or the
  full set from Debian's ``dataset-fashion-mnist`` folder or any folder with the idx files.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jepa_core.data import CorruptSampleError
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEMO_FILE = Path(__file__).parent / "demo_data" / "fashion_mnist_sample.npz"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def pretrain_transform(size: int, crop_scale=(0.3, 1.0), mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The official pretraining transform (ijepa:src/transforms.py with every config's flags):
    RandomResizedCrop(size, scale=crop_scale) with torchvision's default ratio (3/4, 4/3) and
    bilinear resize, to tensor, normalise. No flip, colour jitter or blur (all off in the
    released configs). Works on PIL images and on uint8 tensors ``[C, H, W]``."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


class BatchRandomResizedCrop:
    """The pretraining transform for a whole uint8 batch ``[B, C, H, W]`` at once: random-resized
    crops (torchvision's ``RandomResizedCrop.get_params`` rule: area fraction ~ U(scale), aspect
    ratio log-uniform in ``ratio``, 10 tries, then a centre crop), bilinearly resampled to
    ``size`` by one ``grid_sample`` call at exactly the source positions that
    ``F.interpolate(bilinear, align_corners=False)`` uses on the cropped image, then normalised.

    For crops no larger than the output (always the case for the 28 px demo) this equals the
    per-image transform; larger crops are resampled without antialiasing. It removes the
    per-sample Python cost that dominates data loading of small in-memory images.
    """

    def __init__(self, size: int, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3), mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def boxes(self, B: int, H: int, W: int, g: torch.Generator, tries: int = 10) -> torch.Tensor:
        """``[B, 4]`` crops as (top, left, height, width)."""
        import math

        area = H * W * (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(B, tries, generator=g, dtype=torch.float64))
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(lo + (hi - lo) * torch.rand(B, tries, generator=g, dtype=torch.float64))
        w = torch.round(torch.sqrt(area * aspect))
        h = torch.round(torch.sqrt(area / aspect))
        ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
        first = ok.to(torch.int8).argmax(1)
        rows = torch.arange(B)
        h, w, found = h[rows, first], w[rows, first], ok.any(1)
        # Fallback: the largest centred crop with the aspect ratio clamped into `ratio`.
        in_ratio = W / H
        if in_ratio < min(self.ratio):
            fw, fh = W, round(W / min(self.ratio))
        elif in_ratio > max(self.ratio):
            fh, fw = H, round(H * max(self.ratio))
        else:
            fw, fh = W, H
        h = torch.where(found, h, torch.full_like(h, fh))
        w = torch.where(found, w, torch.full_like(w, fw))
        u = torch.rand(B, 2, generator=g, dtype=torch.float64)
        top = torch.where(found, torch.floor(u[:, 0] * (H - h + 1)), torch.full_like(h, (H - fh) // 2))
        left = torch.where(found, torch.floor(u[:, 1] * (W - w + 1)), torch.full_like(w, (W - fw) // 2))
        return torch.stack([top, left, h, w], 1)

    def __call__(self, images: torch.Tensor, g: torch.Generator, slots: torch.Tensor | None = None,
                 total: int | None = None) -> torch.Tensor:
        """Crop ``images``; with ``slots``, the boxes are drawn for a batch of ``total`` samples
        and ``images[i]`` takes box ``slots[i]`` (the global batch of
        :class:`jepa_core.masks.collator.MaskCollator`, whatever the number of processes)."""
        B, _, H, W = images.shape
        if slots is None:
            boxes = self.boxes(B, H, W, g)
        else:
            boxes = self.boxes(B if total is None else total, H, W, g)[slots]
        top, left, h, w = boxes.float().unbind(1)
        # Source pixel of each output pixel, as F.interpolate(align_corners=False) computes it
        # on the cropped image (clamped to the crop), placed in the full image.
        t = torch.arange(self.size, dtype=torch.float32) + 0.5
        xs = left[:, None] + ((t[None] * w[:, None] / self.size) - 0.5).clamp(min=0).minimum(w[:, None] - 1)
        ys = top[:, None] + ((t[None] * h[:, None] / self.size) - 0.5).clamp(min=0).minimum(h[:, None] - 1)
        grid = torch.stack(
            [((xs + 0.5) / W * 2 - 1)[:, None, :].expand(B, self.size, self.size),
             ((ys + 0.5) / H * 2 - 1)[:, :, None].expand(B, self.size, self.size)], dim=-1,
        )
        x = images.float().div_(255.0)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return (out - self.mean) / self.std


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_ratio: float = 256 / 224):
    """Resize the short side to ``size * 256 / 224`` and centre-crop ``size`` (the usual protocol);
    inputs already at ``size`` are only normalised."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.ToImage(),
        v2.Resize(int(round(size * resize_ratio)), antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


def normalize_transform(mean, std):
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


class TensorImages(Dataset):
    """In-memory uint8 images ``[N, H, W]`` or ``[N, C, H, W]`` with labels."""

    def __init__(self, images: np.ndarray | torch.Tensor, labels, transform=None):
        images = torch.as_tensor(images)
        self.images = images.unsqueeze(1) if images.ndim == 3 else images
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]


class ImageFolder(Dataset):
    """``root/<split>/<class>/<image>`` (the ImageNet layout), classes sorted by name."""

    def __init__(self, root: str | Path, split: str | None = "train", transform=None):
        root = Path(root)
        folder = root / split if split else root
        if not folder.is_dir():
            hint = f" (expected the ImageNet layout {root}/{split}/<class>/<image>)" if split else ""
            raise FileNotFoundError(f"image folder {str(folder)!r} does not exist{hint}; set data.root")
        self.classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"no class folders in {str(folder)!r}; expected {folder}/<class>/<image>")
        self.samples = [
            (p, c)
            for c, name in enumerate(self.classes)
            for p in sorted((folder / name).rglob("*"))
            if p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(folder)!r}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = to_rgb8(im)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... on bad files
            raise CorruptSampleError(f"{path}: {type(e).__name__}: {e}") from e
        return (self.transform(img) if self.transform else img), label


def to_rgb8(im):
    """An 8-bit RGB PIL image from any mode, scaling high bit depths instead of clipping them.

    PIL's ``convert("RGB")`` clips 16-bit grayscale (modes ``I;16*``, and ``I`` as 16-bit PNGs
    and TIFFs open) at 255, which saturates almost every pixel. Here 16-bit and 32-bit integer
    images are read as the 16-bit range (``v / 257``: 0 -> 0, 65535 -> 255) and float images
    (mode ``F``) as [0, 1] when they lie in it, else as [0, 255]; out-of-range values clip.
    8-bit modes (``L``, ``P``, ``RGBA``, ``CMYK``, ...) go through ``convert("RGB")`` unchanged.
    """
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            scale = 255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0
        else:
            scale = 1 / 257.0
        gray = np.clip(np.rint(np.nan_to_num(a * scale)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return im.convert("RGB")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = bytearray(f.read())  # writable, so torch.as_tensor shares it without a warning
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim < 1:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_fashion_mnist(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read the idx files (gzipped or not) from ``root``: ``[N, 28, 28]`` uint8 and ``[N]`` labels."""
    root = Path(root)
    prefix = {"train": "train", "test": "t10k"}[split]
    found = {}
    for kind, stem in (("images", f"{prefix}-images-idx3-ubyte"), ("labels", f"{prefix}-labels-idx1-ubyte")):
        for name in (stem + ".gz", stem):
            if (root / name).is_file():
                found[kind] = root / name
                break
        else:
            raise FileNotFoundError(
                f"Fashion-MNIST {split} {kind} not found: looked for {stem}.gz and {stem} in {str(root)!r}. "
                "Install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
                "or set data.root to a folder with the idx files; data.dataset=fashion_mnist_demo "
                "uses the bundled sample instead"
            )
    return _read_idx(found["images"]), _read_idx(found["labels"]).astype(np.int64)


def load_fashion_mnist(source: str, root: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``source='fashion_mnist_demo'``: the bundled sample; ``'fashion_mnist'``: the full set
    from ``root`` (default: Debian's folder)."""
    if source == "fashion_mnist_demo":
        with np.load(DEMO_FILE, allow_pickle=False) as z:
            return z[f"{split}_images"], z[f"{split}_labels"].astype(np.int64)
    return read_fashion_mnist(root or DEBIAN_FASHION_MNIST, split)
