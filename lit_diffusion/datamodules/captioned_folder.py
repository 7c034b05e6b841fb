"""Image + caption pairs in a folder, in the layouts people have them:

* the Hugging Face ``imagefolder`` convention (what diffusers' text-to-image example reads): ``metadata.jsonl``
  (one ``{"file_name": "0001.png", "text": "a caption"}`` per line) or ``metadata.csv`` / ``captions.csv``
  (columns ``file_name``, ``text``) next to the images, in ``root`` or in ``root/train`` (then ``root/test``,
  ``root/validation`` or ``root/val`` validates); a list of captions gives one sample per caption;
* COCO captions: ``root/annotations/captions_<split>.json`` (or ``root/captions_<split>.json``) with ``images``
  (id, file_name) and ``annotations`` (image_id, caption), the images in ``root/<split>/`` (``train2017/``,
  ``val2014/``, …); every training caption is a sample, validation keeps each image once with its first caption.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from lit_diffusion.datamodules.base import ImageDataModule, Split, missing_dataset_error
from lit_diffusion.datamodules.captions import CAPTION_KEY
from lit_diffusion.errors import UserError

METADATA_FILES = ("metadata.jsonl", "metadata.csv", "captions.csv")
VAL_FOLDERS = ("test", "validation", "val")


def metadata_file(folder: Path) -> Path | None:
    return next((folder / name for name in METADATA_FILES if (folder / name).is_file()), None)


def read_metadata(path: Path, image_column: str, caption_column: str) -> Split:
    """The (image, caption) samples of an imagefolder metadata file."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with path.open(newline="") as file:
            rows = list(csv.DictReader(file))
    if rows and (image_column not in rows[0] or caption_column not in rows[0]):
        raise UserError(f"{path} has columns {sorted(rows[0])}; set data.image_column and data.caption_column "
                        f"(now {image_column!r}, {caption_column!r})")
    files, captions = [], []
    for row in rows:
        texts = row[caption_column] if isinstance(row[caption_column], list) else [row[caption_column]]
        files += [str(path.parent / row[image_column])] * len(texts)
        captions += [str(t).strip() for t in texts]
    return samples(files, captions, path)


def read_coco(path: Path, first_only: bool) -> Split:
    """The (image, caption) samples of a COCO ``captions_<split>.json``; its images in ``<root>/<split>/``."""
    data = json.loads(path.read_text())
    split = path.stem.removeprefix("captions_")
    root = path.parent.parent if path.parent.name == "annotations" else path.parent
    folder = next((d for d in (root / split, root / "images" / split, root) if d.is_dir()), root)
    names = {image["id"]: image["file_name"] for image in data["images"]}
    seen, files, captions = set(), [], []
    for annotation in data["annotations"]:
        if first_only and annotation["image_id"] in seen:
            continue
        seen.add(annotation["image_id"])
        files.append(str(folder / names[annotation["image_id"]]))
        captions.append(annotation["caption"].strip())
    return samples(files, captions, path)


def samples(files: list[str], captions: list[str], source: Path) -> Split:
    if missing := next((f for f in files if not Path(f).is_file()), None):
        raise UserError(f"{source} lists '{missing}', which does not exist; put the images where it says")
    return np.array(files), {CAPTION_KEY: np.array(captions)}


class CaptionedFolderDataModule(ImageDataModule):
    """Image + caption pairs from ``root`` (layouts in the module docstring); samples ``{"image", "caption"}``.

    Args:
        image_column, caption_column: imagefolder metadata columns (diffusers' ``--image_column`` /
            ``--caption_column``).
    """

    dataset_name = "captioned image folder"

    def __init__(self, *, image_column: str = "file_name", caption_column: str = "text", image_size: int = 64,
                 center_crop: bool = True, **kwargs: Any):
        super().__init__(image_size=image_size, center_crop=center_crop, **kwargs)
        self.image_column, self.caption_column = image_column, caption_column

    def load_splits(self) -> tuple[Split, Split | None]:
        root = self.root
        if root is not None and (meta := metadata_file(root)):
            return read_metadata(meta, self.image_column, self.caption_column), None
        if root is not None and (meta := metadata_file(root / "train")):
            val = next((m for m in (metadata_file(root / d) for d in VAL_FOLDERS) if m), None)
            return (read_metadata(meta, self.image_column, self.caption_column),
                    None if val is None else read_metadata(val, self.image_column, self.caption_column))
        coco = sorted({*root.glob("annotations/captions_*.json"), *root.glob("captions_*.json")}) if root else []
        train = next((p for p in coco if "train" in p.stem), None)
        if train is not None:
            val = next((p for p in coco if "val" in p.stem), None)
            return read_coco(train, first_only=False), None if val is None else read_coco(val, first_only=True)
        raise missing_dataset_error(
            "Captioned images (metadata.jsonl, metadata.csv, captions.csv or COCO captions_*.json)",
            [root] if root else [],
            "set data.root=/path/to/dir with the images and a metadata.jsonl ({\"file_name\": ..., \"text\": ...} per "
            "line) or metadata.csv/captions.csv (columns file_name,text), in it or in its train/ folder; or a COCO "
            "folder with annotations/captions_train2017.json and train2017/")
