"""An image folder as webdataset tar shards (what :class:`~lit_diffusion.datamodules.WebDatasetDataModule`
reads), for data to be streamed from object storage or read as a few large files instead of millions of small
ones.  Written with webdataset's own ``ShardWriter``: each image's file bytes unchanged under its extension
(formats the reader does not decode, e.g. ``.bmp``, re-encoded as RGB PNG), ``<key>.cls`` with the class
subfolder's index (``labels``; sorted names, as :class:`~lit_diffusion.datamodules.ImageFolderDataModule`
numbers them) and ``<key>.txt`` with the caption file beside the image (``<stem>.txt``), when there is one.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import webdataset as wds

from lit_diffusion.datamodules.base import read_image
from lit_diffusion.datamodules.image_folder import class_names, find_images
from lit_diffusion.datamodules.shards import IMAGE_EXTENSIONS
from lit_diffusion.errors import UserError
from lit_diffusion.files import fsync_dir

SHARD_PATTERN = "shard-%06d.tar"


def image_record(path: Path) -> tuple[str, bytes]:
    """(extension, bytes) of the image file as stored in a shard."""
    ext = path.suffix.lower().lstrip(".")
    if ext in IMAGE_EXTENSIONS:
        return ext, path.read_bytes()
    buffer = io.BytesIO()
    read_image(path, "RGB").save(buffer, format="PNG")
    return "png", buffer.getvalue()


def write_shards(root: str | Path, out: str | Path, *, labels: bool = False, max_count: int = 10000,
                 max_size: float = 3e9) -> list[Path]:
    """Every image under ``root`` (sorted paths; see the module docstring) into ``out/shard-000000.tar`` …, at
    most ``max_count`` samples and ``max_size`` bytes per shard; returns the shards.  The shards are written
    into a temporary folder that is renamed to ``out`` at the end, so an interrupted run leaves no partial set."""
    root, out = Path(root), Path(out)
    files = find_images(root) if root.is_dir() else []
    if not files:
        raise UserError(f"no image files (.png/.jpg/.jpeg/.webp/.bmp) under '{root.absolute()}'; pass root=FOLDER")
    if out.exists():
        raise UserError(f"'{out}' already exists; pass a new out=FOLDER (existing shards are never overwritten)")
    if max_count < 1 or max_size <= 0:
        raise UserError(f"max_count={max_count} and max_size={max_size} must be positive")
    classes = class_names(root, files) if labels else None
    if labels and classes is None:
        raise UserError(f"labels=true needs every image in a class subfolder of '{root}' (root/<class>/...); "
                        "some lie directly in it")
    label_of = {name: index for index, name in enumerate(classes or [])}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        with wds.ShardWriter(str(partial / SHARD_PATTERN), maxcount=max_count, maxsize=max_size, verbose=0,
                             encoder=False) as sink:
            for index, path in enumerate(files):
                ext, data = image_record(path)
                sample = {"__key__": f"{index:09d}", ext: data}
                if classes is not None:
                    sample["cls"] = str(label_of[path.relative_to(root).parts[0]]).encode()
                if (caption := path.with_suffix(".txt")).is_file():
                    sample["txt"] = caption.read_bytes()
                sink.write(sample)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    return sorted(out.glob("shard-*.tar"))
