"""Make the bundled demo set: a stratified sample of Fashion-MNIST.

Source: Debian's `dataset-fashion-mnist` (Fashion-MNIST by Zalando Research, MIT licence;
`apt-get install dataset-fashion-mnist` puts it in /usr/share/datasets/fashion-mnist/).
Takes the first TRAIN_PER_CLASS images of each class of the training set and the first
TEST_PER_CLASS of each class of the test set (deterministic, no randomness), and writes
`src/jepa_image/demo_data/fashion_mnist_sample.npz` with uint8 arrays
`train_images [N,28,28]`, `train_labels [N]`, `test_images`, `test_labels`.

Run: python packages/jepa-image/scripts/make_demo_data.py [SOURCE_FOLDER]
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from jepa_image.data import read_fashion_mnist  # noqa: E402

TRAIN_PER_CLASS = 1200
TEST_PER_CLASS = 200


def stratified(images: np.ndarray, labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))
    return images[keep], labels[keep]


def main() -> None:
    source = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out = Path(__file__).resolve().parents[1] / "src/jepa_image/demo_data/fashion_mnist_sample.npz"
    tr_x, tr_y = stratified(*read_fashion_mnist(source, "train"), TRAIN_PER_CLASS)
    te_x, te_y = stratified(*read_fashion_mnist(source, "test"), TEST_PER_CLASS)
    np.savez_compressed(out, train_images=tr_x, train_labels=tr_y, test_images=te_x, test_labels=te_y)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(tr_y)} train, {len(te_y)} test")


if __name__ == "__main__":
    main()
