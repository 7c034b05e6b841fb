"""A DataModule of ``n`` random 4×4 images whose labels are their item numbers (order and sharding tests)."""

import numpy as np

from lit_diffusion.datamodules import ImageDataModule


class Items(ImageDataModule):
    def __init__(self, n: int = 24, **kwargs):
        super().__init__(image_size=4, channels=1, val_fraction=0.0, **kwargs)
        self.n = n

    def load_splits(self):
        images = np.random.default_rng(0).integers(0, 256, (self.n, 4, 4), dtype=np.uint8)
        return (images, list(range(self.n))), None
