"""Stand-in datasets in the on-disk layouts of the GPU paper configurations, for speed and memory checks only.

The paper datasets (CelebA-HQ, ImageNet, MVTec AD, UCF-101, BraTS) cannot be downloaded here, so
``benchmarks/gpu_paper_configs.sh`` trains each paper configuration for a few steps on files of the right format,
size and layout but random content (smooth noise: a loss curve on it means nothing):

    python benchmarks/stand_in_data.py OUT_DIR [images mvtec ucf101 brats]

writes ``OUT_DIR/images`` (an image folder of 256 × 256 RGB PNGs: CelebA-HQ / ImageNet), ``OUT_DIR/mvtec/bottle``
(``train/good``, ``test/good``, ``test/broken_large`` and ``ground_truth/broken_large`` masks), ``OUT_DIR/ucf101``
(class folders of 320 × 240 frame folders) and ``OUT_DIR/brats`` (BraTS 2021 cases: four 240 × 240 × 155
modalities and a label map, ``.nii``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int = 8) -> np.ndarray:
    """uint8 noise of ``shape`` (H, W[, C]): ``cells`` × ``cells`` random values bilinearly upsampled."""
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, channels, cells, cells)).astype(np.float32))
    image = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    return image.permute(1, 2, 0).squeeze(-1).round().clamp(0, 255).to(torch.uint8).numpy()


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def image_folder(root: Path, rng: np.random.Generator, count: int = 256) -> None:
    for i in range(count):
        save_png(smooth_noise(rng, (256, 256, 3)), root / f"{i:05d}.png")


def mvtec(root: Path, rng: np.random.Generator) -> None:
    root = root / "bottle"  # a category folder
    for sub, count in {"train/good": 64, "test/good": 8, "test/broken_large": 8}.items():
        for i in range(count):
            save_png(smooth_noise(rng, (256, 256, 3)), root / sub / f"{i:03d}.png")
            if sub == "test/broken_large":
                mask = np.zeros((256, 256), np.uint8)
                mask[64:128, 96:160] = 255
                save_png(mask, root / "ground_truth" / "broken_large" / f"{i:03d}_mask.png")


def ucf101(root: Path, rng: np.random.Generator, classes: int = 2, clips: int = 4, frames: int = 32) -> None:
    for c in range(classes):
        for v in range(clips):
            for t in range(frames):
                save_png(smooth_noise(rng, (240, 320, 3)), root / f"Class{c}" / f"v_Class{c}_g01_c{v:02d}" / f"{t:03d}.png")


def brats(root: Path, rng: np.random.Generator, cases: int = 3) -> None:
    z, y, x = np.mgrid[:155, :240, :240]
    brain = ((x - 120) / 80) ** 2 + ((y - 120) / 100) ** 2 + ((z - 77) / 60) ** 2 < 1
    tumour = ((x - 150) / 20) ** 2 + ((y - 100) / 20) ** 2 + ((z - 80) / 15) ** 2 < 1
    brain, tumour = brain.transpose(2, 1, 0), tumour.transpose(2, 1, 0)  # (x, y, z), BraTS's axis order
    for case in range(cases):
        name = f"BraTS2021_{case:05d}"
        (root / name).mkdir(parents=True, exist_ok=True)
        for modality in ("t1", "t1ce", "t2", "flair"):
            volume = np.where(brain, rng.integers(200, 800, brain.shape), 0).astype(np.int16)
            volume[tumour] += 400
            nibabel.Nifti1Image(volume, np.eye(4)).to_filename(root / name / f"{name}_{modality}.nii")
        seg = np.where(tumour, 4, 0).astype(np.uint8)
        nibabel.Nifti1Image(seg, np.eye(4)).to_filename(root / name / f"{name}_seg.nii")


WRITERS = {"images": image_folder, "mvtec": mvtec, "ucf101": ucf101,
           "brats": brats}


def main(out: Path, names: list[str]) -> None:
    for name in names:
        if not (out / name).exists():
            WRITERS[name](out / name, np.random.default_rng(0))


if __name__ == "__main__":
    if len(sys.argv) < 2 or not set(sys.argv[2:]) <= set(WRITERS):
        sys.exit(f"usage: python benchmarks/stand_in_data.py OUT_DIR [{' '.join(WRITERS)}] (default: all)")
    main(Path(sys.argv[1]), sys.argv[2:] or list(WRITERS))
