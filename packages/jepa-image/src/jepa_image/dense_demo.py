"""Dense demo scenes, no download: Fashion-MNIST items pasted on a larger canvas, with a
per-pixel class map, for jepa-eval's ``dense`` protocol (linear segmentation probe and patch
k-NN label transfer on frozen patch tokens).

How a scene is made (:func:`compose_scenes`), all drawn from one ``torch.Generator`` seeded with
``seed``, so a seed gives the same scenes on every machine:

- the number of items is uniform in ``items = (low, high)`` (default 2 to 4);
- each item is a uniformly drawn image of the split, resized to ``item`` px (antialiased
  bilinear, skipped when ``item`` is 28), at a uniform integer position that keeps it inside the
  ``canvas`` (no cropping); items may overlap, and later items lie on top;
- an item's *ink* is its pixels at or above ``threshold`` (uint8, default 32, 1/8 of full
  scale; Fashion-MNIST's backgrounds are 0 and its faint halo rarely reaches it). Only ink is
  pasted: the canvas pixel takes the value of the top-most item with ink there, and the class
  map that item's class; every other pixel is 0 in the image and background in the map. So
  image and map agree exactly: a non-zero pixel is an item's ink and carries its class.

Classes: 0 is background, ``1 + c`` is Fashion-MNIST class ``c`` (:data:`CLASSES`); 11 in all.
The scenes have no unlabeled pixels; the protocol's ignore index (255, :data:`IGNORE_INDEX`)
would mark them.

Size: :func:`build_dense_scenes` renders at the model's ``data.image_size`` (so the encoder
sees the token grid it was trained on, whatever its position encoding), with items at half of
it (14 px for the 28 px demo: the ratio of 28 px items on a 56 px canvas). Training scenes come
from the training split, held-out ones from the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from jepa_image import data as D

BACKGROUND = 0
IGNORE_INDEX = 255  # unlabeled pixels (none in these scenes); jepa-eval's dense protocol default
CLASSES: tuple[str, ...] = ("background", *D.FASHION_MNIST_CLASSES)
INK_THRESHOLD = 32  # uint8: an item pixel at or above this is ink (pasted, labeled); below is background
DENSE_SEED = 0  # fixed: every run (any train.seed) is scored on the same scenes
TRAIN_SCENES = 1000
TEST_SCENES = 300


@dataclass
class Placement:
    """One pasted item: its index in the source split, Fashion-MNIST class, top-left corner."""

    source: int
    label: int
    top: int
    left: int


class DenseScenes(Dataset):
    """``(image, label map)`` pairs: uint8 scenes ``[S, 1, H, W]`` (through ``transform``, e.g.
    normalisation) and LongTensor class maps ``[S, H, W]`` (0 background, 1 + Fashion-MNIST
    class). ``placements[i]``: the items of scene ``i``, bottom to top."""

    classes = CLASSES
    num_classes = len(CLASSES)
    ignore_index = IGNORE_INDEX

    def __init__(self, images: torch.Tensor, label_maps: torch.Tensor, placements: list[list[Placement]],
                 transform=None):
        self.images, self.label_maps, self.placements, self.transform = images, label_maps, placements, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.label_maps[i]


def _resize(items: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[n, 28, 28]`` -> uint8 ``[n, size, size]`` (antialiased bilinear, rounded)."""
    if items.shape[-1] == size:
        return items
    x = F.interpolate(items[:, None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8)


def compose_scenes(images, labels, num_scenes: int, canvas: int = 56, item: int = 28, items: tuple[int, int] = (2, 4),
                   threshold: int = INK_THRESHOLD, seed: int = 0, transform=None) -> DenseScenes:
    """``num_scenes`` scenes of ``items`` Fashion-MNIST images (uint8 ``[N, 28, 28]``, labels
    ``[N]``) on a ``canvas`` px square, each item ``item`` px (see the module docstring)."""
    if not 1 <= items[0] <= items[1]:
        raise ValueError(f"items must be (low, high) with 1 <= low <= high, got {items}")
    if not 1 <= item <= canvas:
        raise ValueError(f"an item of {item} px does not fit a {canvas} px canvas")
    images = torch.as_tensor(np.asarray(images))
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    resized = _resize(images, item)  # every source image once: cheaper than per scene for thousands of scenes
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(num_scenes, 1, canvas, canvas, dtype=torch.uint8)
    maps = torch.full((num_scenes, canvas, canvas), BACKGROUND, dtype=torch.long)
    placements: list[list[Placement]] = []
    for s in range(num_scenes):
        n = int(torch.randint(items[0], items[1] + 1, (1,), generator=g))
        src = torch.randint(0, len(images), (n,), generator=g)
        pos = torch.randint(0, canvas - item + 1, (n, 2), generator=g)
        pasted = resized[src]
        scene = []
        for j in range(n):
            top, left = int(pos[j, 0]), int(pos[j, 1])
            ink = pasted[j] >= threshold
            region = out[s, 0, top:top + item, left:left + item]
            region[ink] = pasted[j][ink]
            maps[s, top:top + item, left:left + item][ink] = 1 + int(labels[src[j]])
            scene.append(Placement(int(src[j]), int(labels[src[j]]), top, left))
        placements.append(scene)
    return DenseScenes(out, maps, placements, transform)


def build_dense_scenes(source: str = "fashion_mnist_demo", root: str | None = None, image_size: int = 28,
                       mean=D.FASHION_MNIST_MEAN, std=D.FASHION_MNIST_STD, train_scenes: int | None = None,
                       test_scenes: int | None = None, seed: int = DENSE_SEED) -> tuple[DenseScenes, DenseScenes]:
    """Training scenes from the training split (seed ``seed``) and held-out scenes from the test
    split (seed ``seed + 1``), rendered at ``image_size`` with items of ``image_size // 2`` px,
    normalised with ``mean`` / ``std`` (the model's data settings). Scene counts: default
    :data:`TRAIN_SCENES` / :data:`TEST_SCENES` (read at call time)."""
    tf = D.normalize_transform(mean, std)
    train_scenes = TRAIN_SCENES if train_scenes is None else train_scenes
    test_scenes = TEST_SCENES if test_scenes is None else test_scenes
    sets = []
    for split, n, s in (("train", train_scenes, seed), ("test", test_scenes, seed + 1)):
        images, labels = D.load_fashion_mnist(source, root, split)
        sets.append(compose_scenes(images, labels, n, canvas=image_size, item=max(1, image_size // 2), seed=s,
                                   transform=tf))
    return sets[0], sets[1]
