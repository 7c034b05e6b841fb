"""Folders of videos for GPU runs, in UCF-101's layout: ``root/<class>/<video>.avi|.mp4|.gif`` (read with imageio;
.avi/.mp4 through imageio-ffmpeg), or frame folders ``root/<class>/<video>/<frame>.png|.jpg`` (frames in name order).

Each video gives ``clips_per_video`` clips of ``frames`` frames taken every ``stride``-th frame (a clip spans
(frames − 1)·stride + 1 frames), their starts evenly spaced over the video; a video shorter than a clip repeats its
last frame.  Frames are centre-cropped to a square (``center_crop``), resized to ``image_size`` and scaled to
[-1, 1]: samples are ``{"image": (C, T, S, S), "label": class index}`` (classes: the sorted folder names).
Validation holds out ``val_fraction`` of the videos (whole videos, chosen by ``seed``), unless ``val_root`` names
another folder of the same layout (e.g. UCF-101's test split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lit_diffusion.datamodules.base import ImageDataModule, SampleViews, image_transform, missing_dataset_error, read_image
from lit_diffusion.errors import UserError

VIDEO_SUFFIXES = (".avi", ".mp4", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
WHERE_TO_GET = ("download UCF-101 from https://www.crcv.ucf.edu/data/UCF101.php (UCF101.rar, unpacked to "
                "root/<class>/<video>.avi), or put any videos or frame folders in that layout, and set data.root=DIR")


def find_videos(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """The videos (files or frame folders) under ``root/<class>/``, their class indices and the class names."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    videos, labels = [], []
    for label, name in enumerate(classes):
        for entry in sorted((root / name).iterdir()):
            is_frames = entry.is_dir() and any(f.suffix.lower() in FRAME_SUFFIXES for f in entry.iterdir())
            if is_frames or entry.suffix.lower() in VIDEO_SUFFIXES:
                videos.append(entry)
                labels.append(label)
    if not videos:
        raise missing_dataset_error("video folder", [root], WHERE_TO_GET)
    return videos, labels, classes


def read_frames(video: Path, mode: str) -> list[Image.Image]:
    """All frames of a video file or frame folder as PIL images in ``mode``; unreadable files are a UserError."""
    if video.is_dir():
        return [read_image(f, mode) for f in sorted(video.iterdir()) if f.suffix.lower() in FRAME_SUFFIXES]
    try:
        frames = iio.imread(video, index=None)
    except Exception as err:  # imageio's plugins raise many kinds for broken or unsupported files
        raise UserError(f"cannot read the video '{video}' ({err}); remove or replace the file "
                        "(.avi/.mp4 need pip install imageio-ffmpeg)") from err
    return [Image.fromarray(np.asarray(frame)).convert(mode) for frame in frames]


class VideoClips(Dataset):
    """``clips_per_video`` clips of every video (module docstring); item i is clip i % clips_per_video of video
    i // clips_per_video."""

    def __init__(self, videos: list[Path], labels: list[int], *, frames: int, stride: int, clips_per_video: int,
                 image_size: int, channels: int, center_crop: bool):
        self.videos, self.labels = videos, labels
        self.frames, self.stride, self.clips_per_video = frames, stride, clips_per_video
        self.mode = "L" if channels == 1 else "RGB"
        self.transform = image_transform(image_size, center_crop)

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, clip = divmod(index, self.clips_per_video)
        frames = read_frames(self.videos[video], self.mode)
        if not frames:
            raise UserError(f"the video '{self.videos[video]}' has no frames; remove it")
        span = (self.frames - 1) * self.stride + 1
        start = round(clip * max(0, len(frames) - span) / max(1, self.clips_per_video - 1))
        picked = [frames[min(start + t * self.stride, len(frames) - 1)] for t in range(self.frames)]
        return {"image": torch.stack([self.transform(f) for f in picked], dim=1), "label": self.labels[video]}


class VideoFolderDataModule(ImageDataModule):
    """Clips of the videos in ``root`` (module docstring): batches of ``image`` (B, C, T, S, S) and ``label``.

    Args:
        frames, stride, clips_per_video: the clips (Ho et al. 2022's UCF-101: 16 frames, stride 1).
        val_root: a folder of validation videos in the same layout (null: hold out ``val_fraction`` of ``root``'s).
    """

    dataset_name = "video folder"

    def __init__(self, *, frames: int = 16, stride: int = 1, clips_per_video: int = 1, val_root: str | None = None,
                 **kwargs: Any):
        if frames < 1 or stride < 1 or clips_per_video < 1:
            raise UserError(f"data.frames={frames}, data.stride={stride} and data.clips_per_video={clips_per_video} "
                            "must be positive")
        self.frames = frames  # read by image_shape, which the base constructor checks the pairs against
        super().__init__(**kwargs)
        self.stride, self.clips_per_video = stride, clips_per_video
        self.val_root = None if val_root is None else Path(val_root).expanduser().absolute()
        self.classes: list[str] = []

    @property
    def image_shape(self) -> tuple[int, int, int, int]:
        """(C, T, S, S) of every clip."""
        return (self.channels, self.frames, self.image_size, self.image_size)

    def clips(self, videos: list[Path], labels: list[int]) -> SampleViews:
        return SampleViews(VideoClips(videos, labels, frames=self.frames, stride=self.stride,
                                      clips_per_video=self.clips_per_video, image_size=self.image_size,
                                      channels=self.channels, center_crop=self.center_crop), self.pairs, self.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.root is None:
            raise missing_dataset_error("video folder", [], WHERE_TO_GET)
        videos, labels, self.classes = find_videos(self.root)
        self.num_classes = len(self.classes)
        if self.val_root is not None:
            val_videos, val_labels, _ = find_videos(self.val_root)
        else:
            order = torch.randperm(len(videos), generator=torch.Generator().manual_seed(self.seed)).tolist()
            held = order[:round(len(videos) * self.val_fraction)]
            val_videos, val_labels = [videos[i] for i in held], [labels[i] for i in held]
            kept = sorted(order[len(held):])
            videos, labels = [videos[i] for i in kept], [labels[i] for i in kept]
        self.train_set = self.clips(videos, labels)
        self.val_set = self.clips(val_videos, val_labels) if val_videos else None
        if len(self.train_set) < self.batch_size:
            raise UserError(f"{self.dataset_name}: {len(self.train_set)} training clips in {self.root}, fewer than "
                            f"data.batch_size={self.batch_size}; lower data.batch_size or add videos")
