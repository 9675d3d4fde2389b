#!/usr/bin/env bash
# The device check: the cuda-subset preset end to end on one GPU (sweep, then report).
# Run by the session's device tool from the repository root; writes what comes back to $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 JOINTTASK_CACHE=/tmp/jtcache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/gpu.txt
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a $OUT/gpu.txt
S=/tmp/cuda-subset
start=$(date +%s)
timeout ${SWEEP_SECONDS:-330} python3 -m jointtask.cli sweep experiments/paper/cuda-subset.toml --out $S \
  --device cuda --workers ${WORKERS:-12} > $OUT/sweep.log 2>&1
echo "sweep exit $? after $(( $(date +%s) - start )) s" | tee -a $OUT/gpu.txt
python3 -m jointtask.cli status $S | tee -a $OUT/gpu.txt
python3 -m jointtask.cli analyze $S --n-boot 300 >> $OUT/sweep.log 2>&1
mkdir -p $OUT/report
cp $S/report/index.html $S/report/transitions.csv $S/report/ratios.csv $S/report/results.csv $OUT/report/ 2>/dev/null
echo "total $(( $(date +%s) - start )) s" | tee -a $OUT/gpu.txt
