#!/usr/bin/env bash
# The GPU paper configurations of issues 12 and 14 — sr3_celebahq_16_128, palette_imagenet_256, anoddpm_mvtec,
# video_ucf101, segdiff_brats — each trained for $STEPS steps through the real entry point (trainer=gpu, bf16) on
# stand-in data in its dataset's on-disk layout (benchmarks/stand_in_data.py: random content, so the losses mean
# nothing). Checks that each composes, loads its data format, fits its network and trains on one GPU, and measures
# samples/s (Lightning's ThroughputMonitor, callbacks/throughput.yaml: the mean over the last 10 steps) and peak
# GPU memory (largest nvidia-smi reading during the run minus the one before it). Run from the repository root:
#
#   OUT=/some/dir PYTHONPATH=$PWD bash benchmarks/gpu_paper_configs.sh
#   CONFIGS="anoddpm_mvtec video_ucf101" STEPS=20 OUT=... bash benchmarks/gpu_paper_configs.sh
#
# Per-device batches below the papers' (which were split over many accelerators) are marked in the summary.
# Writes $OUT/summary.txt and $OUT/logs.tar.gz.
set -uo pipefail
: "${OUT:?set OUT to the output folder}"
WORK=${WORK:-/tmp/gpu_paper_configs}
STEPS=${STEPS:-30}
CONFIGS=${CONFIGS:-sr3_celebahq_16_128 palette_imagenet_256 anoddpm_mvtec video_ucf101 segdiff_brats}
TRAINER=${TRAINER:-gpu}  # a CPU dry run of the script: TRAINER=cpu EXTRA="network.base_channels=32 data.image_size=32"
EXTRA=${EXTRA:-}         # more overrides for every run
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1
GPU=$(command -v nvidia-smi >/dev/null && echo 1 || echo 0)
[ "$GPU" = 1 ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/summary.txt"

declare -A ROOT=([sr3_celebahq_16_128]=images [palette_imagenet_256]=images [anoddpm_mvtec]=mvtec
                 [video_ucf101]=ucf101 [segdiff_brats]=brats)
DATA=$WORK/data
python benchmarks/stand_in_data.py "$DATA" $(for name in $CONFIGS; do echo "${ROOT[$name]}"; done | sort -u)
declare -A BATCH=([sr3_celebahq_16_128]="64 (paper 256)" [palette_imagenet_256]="16 (paper 1024)"
                  [anoddpm_mvtec]="8 (paper)" [video_ucf101]="16 (config)" [segdiff_brats]="8 (config)")

MEMORY=(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits)
for name in $CONFIGS; do
  batch=${BATCH[$name]%% *}
  baseline=0 smi=
  : > "$WORK/$name.mem"
  if [ "$GPU" = 1 ]; then
    baseline=$("${MEMORY[@]}")
    "${MEMORY[@]}" -lms 200 > "$WORK/$name.mem" &
    smi=$!
  fi
  start=$(date +%s)
  timeout "${RUN_TIMEOUT:-120}" python -m lit_diffusion.run experiment="$name" trainer="$TRAINER" data.root="$DATA/${ROOT[$name]}" \
    data.batch_size="$batch" data.num_workers=8 trainer.max_steps="$STEPS" trainer.log_every_n_steps=5 \
    trainer.val_check_interval="$STEPS" ++trainer.limit_val_batches=1 +callbacks@callbacks.throughput=throughput \
    callbacks.model_checkpoint=null callbacks.sample_grid=null callbacks.evaluation=null \
    hydra.run.dir="$WORK/$name" $EXTRA > "$WORK/$name.log" 2>&1
  rc=$?
  [ -n "$smi" ] && kill "$smi"
  python - "$WORK" "$name" "$rc" "$start" "$baseline" "${BATCH[$name]}" <<'PY' | tee -a "$OUT/summary.txt"
import csv, os, re, sys, time
work, name, rc, start, baseline, batch = sys.argv[1:]
last, metrics = {}, os.path.join(work, name, "csv", "metrics.csv")
for row in csv.DictReader(open(metrics)) if os.path.exists(metrics) else []:
    last.update({k: v for k, v in row.items() if v})
readings = [int(v) for v in open(os.path.join(work, name + ".mem")).read().split() if v.isdigit()]
log = open(os.path.join(work, name + ".log"), errors="replace").read()
params = re.findall(r"Trainable params: ([\d.]+ ?[KMB]?)", log)
rate = last.get("train/device/samples_per_sec")
rate = f"{float(rate):.1f}" if rate else "n/a"
print(f"{name}: rc={rc} wall={time.time() - float(start):.0f}s steps={last.get('step')} batch={batch} "
      f"params={params[0].strip() if params else '?'} samples/s={rate} "
      f"peak_mem={max(readings) - int(baseline) if readings else 'n/a'}MiB train/loss={last.get('train/loss')}")
PY
  [ "$rc" = 0 ] || tail -5 "$WORK/$name.log" | tee -a "$OUT/summary.txt"
done
tar -czf "$OUT/logs.tar.gz" -C "$WORK" $(cd "$WORK" && ls *.log *.mem) 2>/dev/null
echo done | tee -a "$OUT/summary.txt"
