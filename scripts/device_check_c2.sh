#!/usr/bin/env bash
# Device check 3: C2 at n=20 (experiments/paper/device-c2.toml): widths 8-32 on the machine's CPU
# cores (one thread each: small models train faster there than on a time-shared GPU), widths
# 48-96 on its GPU, merged into one sweep directory (run ids leave the device out) and analysed.
# DEVICE=cpu, NO_WHEELS=1 and --set overrides in EXTRA let the same script be tried on a machine without a GPU.
set -u
if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
fi
export PYTHONUNBUFFERED=1 JOINTTASK_CACHE=/tmp/jtcache
OUT=${OUT:-/tmp/device-c2-out}; mkdir -p $OUT/c2
JT="python3 -m jointtask.cli"
EXP=experiments/paper/device-c2.toml
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > $OUT/gpu.txt 2>&1
python3 -c "import torch, os; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', 'cpus', os.cpu_count())" | tee -a $OUT/gpu.txt
S=${SWEEP_SECONDS:-380}
start=$(date +%s)
rm -rf /tmp/c2 /tmp/c2-gpu
timeout $S $JT sweep $EXP --out /tmp/c2 --device cpu --workers ${CPU_WORKERS:-10} \
  --set "sweep.widths=[8,12,16,24,32]" ${EXTRA:-} > $OUT/c2-cpu.log 2>&1 &
timeout $S $JT sweep $EXP --out /tmp/c2-gpu --device ${DEVICE:-cuda} --workers ${GPU_WORKERS:-6} \
  --set "sweep.widths=[48,64,96]" ${EXTRA:-} > $OUT/c2-gpu.log 2>&1 &
wait
echo "sweeps ended after $(( $(date +%s) - start )) s" | tee -a $OUT/gpu.txt
python3 scripts/merge_sweeps.py /tmp/c2 /tmp/c2-gpu
$JT status /tmp/c2 | tee -a $OUT/gpu.txt
$JT analyze /tmp/c2 --n-boot 300 > $OUT/c2-analyze.log 2>&1
cp /tmp/c2/report/results.csv /tmp/c2/report/transitions.csv /tmp/c2/report/ratios.csv /tmp/c2/report/index.html \
  /tmp/c2/report/accuracy_ADD.png $OUT/c2/ 2>/dev/null
echo "total $(( $(date +%s) - start )) s" | tee -a $OUT/gpu.txt
