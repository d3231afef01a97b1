"""Cost of drawing masks for the global batch (issue #13): the sampler time per step and process.

Usage: ``python benchmarks/global_masks.py`` (prints the rows of the BENCHMARKS.md table).
"""

from __future__ import annotations

import time

import torch
from jepa_core.masks import MultiBlockMaskConfig, MultiBlockMaskSampler, StepSeeds
from jepa_video.masks import VJEPA_MASK_CONFIGS, MultiBlock3DMaskSampler

GLOBAL_BATCHES = (128, 1024, 2048, 8192)
REPEATS = 7


def main() -> None:
    torch.set_num_threads(1)
    cases = [("I-JEPA 224 px / 16 (14x14 grid)", MultiBlockMaskSampler(MultiBlockMaskConfig(), 14)),
             ("V-JEPA 16x224 px (8x14x14 grid)", MultiBlock3DMaskSampler(VJEPA_MASK_CONFIGS, 8, 14))]
    for name, sampler in cases:
        for size in GLOBAL_BATCHES:
            sampler(size, StepSeeds(0, None, 10_000))  # warm-up
            times = []
            for step in range(REPEATS):
                start = time.perf_counter()
                sampler(size, StepSeeds(0, None, step))
                times.append(time.perf_counter() - start)
            print(f"| {name} | {size} | {sorted(times)[REPEATS // 2] * 1000:.1f} |")


if __name__ == "__main__":
    main()
