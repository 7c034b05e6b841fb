"""A folder of image files (CelebA-HQ, FFHQ or LSUN exports), optionally one subfolder per class."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from lit_diffusion.datamodules.base import ImageDataModule, Split, missing_dataset_error

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


def find_images(root: Path) -> list[Path]:
    """Every image file under ``root`` (recursively, hidden files skipped), sorted."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()
    )


def class_names(root: Path, files: list[Path]) -> list[str] | None:
    """The immediate subfolders holding the images, when every image is in one (torchvision's ImageFolder
    layout ``root/<class>/**/<image>``); ``None`` when some image lies directly in ``root``."""
    if any(path.parent == root for path in files):
        return None
    return sorted({path.relative_to(root).parts[0] for path in files})


class ImageFolderDataModule(ImageDataModule):
    """All images under ``root``, converted to ``channels``, optionally centre-cropped to a square, resized.

    With ``labels=True`` and every image inside an immediate subfolder of ``root``, the subfolders are the
    classes (sorted names -> 0, 1, ...); otherwise the images are unlabeled.  ``labels`` is off by default
    because exports such as FFHQ's ``00000/``, ``01000/``, ... also use subfolders.  Validation is
    ``val_fraction`` of the images, held out by ``seed``.
    """

    dataset_name = "image folder"

    def __init__(
        self,
        *,
        labels: bool = False,
        image_size: int = 64,
        random_flip: bool = True,
        center_crop: bool = True,
        **kwargs: Any,
    ):
        super().__init__(image_size=image_size, random_flip=random_flip, center_crop=center_crop, **kwargs)
        self.labels = labels

    @functools.cached_property
    def _index(self) -> tuple[list[Path], list[str] | None]:
        """The image files and, when labeled, the class names (one scan of ``root``)."""
        files = find_images(self.root) if self.root and self.root.is_dir() else []
        if not files:
            raise missing_dataset_error(
                "Image folder (no .png/.jpg/.jpeg/.webp/.bmp files)",
                [self.root] if self.root else [],
                "set data.root=/path/to/dir containing the images (searched recursively; with data.labels=true, "
                "one subfolder per class)",
            )
        return files, class_names(self.root, files) if self.labels else None

    @property
    def num_classes(self) -> int | None:
        """The number of class subfolders, or None when unlabeled."""
        classes = self._index[1] if self.labels else None
        return None if classes is None else len(classes)

    def load_splits(self) -> tuple[Split, Split | None]:
        files, classes = self._index
        # numpy arrays, not lists of objects: forked workers would copy a list's pages as they touch refcounts
        paths = np.array([str(path) for path in files])
        if classes is None:
            return (paths, None), None
        label_of = {name: label for label, name in enumerate(classes)}
        return (paths, np.array([label_of[path.relative_to(self.root).parts[0]] for path in files])), None
