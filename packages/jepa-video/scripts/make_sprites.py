"""Make the bundled sprite sample for the moving-sprite demo videos.

Source: Debian's `dataset-fashion-mnist` (Fashion-MNIST by Zalando Research, MIT licence;
`apt-get install dataset-fashion-mnist` puts it in /usr/share/datasets/fashion-mnist/).
Takes the first PER_CLASS images of each of the 10 classes of the training set
(deterministic, no randomness) and writes `src/jepa_video/demo_data/fashion_mnist_sprites.npz`
with uint8 arrays `images [N,28,28]` and `labels [N]` (sorted by their position in the source).

Run: python packages/jepa-video/scripts/make_sprites.py [SOURCE_FOLDER]
"""

import gzip
import sys
from pathlib import Path

import numpy as np

PER_CLASS = 50


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian header, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
    images = read_idx(source / "train-images-idx3-ubyte.gz")
    labels = read_idx(source / "train-labels-idx1-ubyte.gz")
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(10)]))
    out = Path(__file__).resolve().parents[1] / "src/jepa_video/demo_data/fashion_mnist_sprites.npz"
    np.savez_compressed(out, images=images[keep], labels=labels[keep])
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB): {len(keep)} sprites")


if __name__ == "__main__":
    main()
