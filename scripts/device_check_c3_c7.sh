#!/usr/bin/env bash
# Device check 2: C3 at n=20 (experiments/paper/device-c3.toml) with widths 16-48 on the machine's
# CPU cores (one thread each: small models train faster there than on a time-shared GPU) and
# widths 64-96 on its GPU, then C7 (device-c7.toml) on the GPU; the two C3 halves are merged
# into one sweep directory (run ids do not depend on the device) and analysed.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 JOINTTASK_CACHE=/tmp/jtcache
JT="python3 -m jointtask.cli"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/gpu.txt
python3 -c "import torch, os; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'cpus', os.cpu_count())" | tee -a $OUT/gpu.txt
S=${SWEEP_SECONDS:-400}
start=$(date +%s)
timeout $S $JT sweep experiments/paper/device-c3.toml --out /tmp/c3 --device cpu --workers ${CPU_WORKERS:-13} \
  --set "sweep.widths=[16,24,32,48]" > $OUT/c3-cpu.log 2>&1 &
( timeout $S $JT sweep experiments/paper/device-c3.toml --out /tmp/c3-gpu --device cuda --workers 3 \
    --set "sweep.widths=[64,96]" > $OUT/c3-gpu.log 2>&1
  left=$(( S - ($(date +%s) - start) ))
  timeout $left $JT sweep experiments/paper/device-c7.toml --out /tmp/c7 --device cuda --workers 4 > $OUT/c7.log 2>&1 ) &
wait
echo "sweeps ended after $(( $(date +%s) - start )) s" | tee -a $OUT/gpu.txt
python3 scripts/merge_sweeps.py /tmp/c3 /tmp/c3-gpu
for d in c3 c7; do
  $JT status /tmp/$d | tee -a $OUT/gpu.txt
  $JT analyze /tmp/$d --n-boot 300 > $OUT/$d-analyze.log 2>&1
  mkdir -p $OUT/$d
  cp /tmp/$d/report/*.csv /tmp/$d/report/index.html $OUT/$d/ 2>/dev/null
  cp /tmp/$d/report/*.png $OUT/$d/ 2>/dev/null
done
echo "total $(( $(date +%s) - start )) s" | tee -a $OUT/gpu.txt
