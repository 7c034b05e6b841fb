"""Feature-extraction throughput of lit_diffusion's evaluation versus torch-fidelity called directly.

Both score the same two PNG folders (``--n`` bundled MNIST digits each, 28×28 → Inception 299×299) with the
same weights (fid-helper's, mapped onto torch-fidelity's InceptionV3), on CPU:

* torch-fidelity: ``calculate_metrics(input1=fake, input2=real, fid=True, cache=False)`` (extracts both);
* ours, cold: ``evaluate fake=DIR`` against the dataset split (reference computed and cached);
* ours, warm: the same call again (reference from the cache: only the generated images are extracted).

    python benchmarks/evaluation_throughput.py [--n 100] [--threads 2]

Prints images/s of each and the ratio ours/torch-fidelity (≥ 1.0 expected warm; ≈ 1.0 cold) and checks that
the FIDs agree.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from lit_diffusion.metrics import build_extractor, dataset_reference, extract
from lit_diffusion.metrics.features import fid_helper_state_dict
from lit_diffusion.metrics.images import dataset_images, folder_images
from lit_diffusion.metrics.scores import fid

MNIST = {"_target_": "lit_diffusion.datamodules.MNISTDataModule", "variant": "bundled_5k", "image_size": 28,
         "channels": 1, "val_fraction": 0.1, "seed": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import torch_fidelity

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["LIT_DIFFUSION_CACHE"] = str(tmp / "cache")
        images = torch.cat(list(dataset_images(MNIST, "train", 2 * args.n)))
        for name, part in (("fake", images[args.n:]), ("real", images[: args.n])):
            (tmp / name).mkdir()
            for i, image in enumerate(part):
                Image.fromarray(image[0].numpy()).save(tmp / name / f"{i:05d}.png")
        extractor = build_extractor("inception")
        state = {k: v for k, v in extractor.net.state_dict().items() if not k.endswith("num_batches_tracked")}
        torch.save(fid_helper_state_dict(list(state), {k: v.shape for k, v in state.items()}), tmp / "w.pth")

        start = time.perf_counter()
        theirs = torch_fidelity.calculate_metrics(input1=str(tmp / "fake"), input2=str(tmp / "real"), fid=True,
                                                  cuda=False, cache=False, verbose=False,
                                                  feature_extractor_weights_path=str(tmp / "w.pth"))
        t_theirs = time.perf_counter() - start

        def ours() -> tuple[float, float]:
            start = time.perf_counter()
            real = dataset_reference(extractor, MNIST, "train", args.n).features
            fake = extract(extractor, folder_images(tmp / "fake"))[0]
            return fid(fake, real), time.perf_counter() - start

        (fid_cold, t_cold), (fid_warm, t_warm) = ours(), ours()
    print(f"protocol: {args.n} generated + {args.n} reference MNIST digits, Inception (fid-helper weights), "
          f"CPU, {args.threads} threads")
    print(f"torch-fidelity direct: {t_theirs:.1f} s ({2 * args.n / t_theirs:.2f} img/s), FID {theirs['frechet_inception_distance']:.4f}")
    print(f"ours, reference cold:  {t_cold:.1f} s, ratio {t_theirs / t_cold:.2f}, FID {fid_cold:.4f}")
    print(f"ours, reference cached: {t_warm:.1f} s, ratio {t_theirs / t_warm:.2f}, FID {fid_warm:.4f}")


if __name__ == "__main__":
    main()
