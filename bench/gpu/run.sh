#!/usr/bin/env bash
# The GPU check, in one call, on a bare CUDA machine (about 5-8 minutes on one H100/H200):
#
#   bench/gpu/run.sh [OUTDIR]        # default: $OUT if set, else var/gpu
#
# 1. Installs the wheels `make gpu-wheels` put in var/gpu-wheels (the node's dependencies a
#    CUDA image lacks; torch, torchvision and timm are expected there) into /tmp/site, and
#    unpacks the dcmtk .debs beside them (storescu and storescp for the end-to-end run).
# 2. bench/inference.py on CUDA: each member and the five-member ensemble, fp32 and bf16,
#    batch 1/4/16, FLOPs and fraction of peak; the optimisations table (channels-last,
#    bf16 autocast, torch.compile, Grad-CAM in the same pass) on EfficientNet-B0 and
#    ResNet-50.
# 3. bench/e2e.py --device cuda, latency section: the demo model and the five-member
#    ensemble (flip TTA, Grad-CAM), uncompressed and JPEG 2000 studies.
# 4. bench/gpu/targets.py: the two GPU targets as ratios.
#
# Writes machine.txt, inference.md/.json/.log, e2e.md/.json/.log and targets.md to OUTDIR.
# GPU_CHECK_DEVICE=cpu GPU_CHECK_SIZE=small GPU_CHECK_WHEELS=none PYTHON=.venv/bin/python runs
# the same steps on a CPU with the local environment, to try the script (GPU_CHECK_MODELS=demo
# leaves out the five-member ensemble, minutes per study on a CPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-${OUT:-var/gpu}}"
device="${GPU_CHECK_DEVICE:-cuda}"
size="${GPU_CHECK_SIZE:-full}"
mkdir -p "$out"
python="${PYTHON:-python3}"
wheels="${GPU_CHECK_WHEELS:-var/gpu-wheels}"

if [ -d "$wheels" ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$wheels"/*.whl || { echo "installing the wheels failed"; exit 2; }
  export PYTHONPATH="/tmp/site:$PWD"
  if ls "$wheels"/*.deb >/dev/null 2>&1; then
    mkdir -p /tmp/dcmtk
    for deb in "$wheels"/*.deb; do dpkg -x "$deb" /tmp/dcmtk; done
    export PATH="/tmp/dcmtk/usr/bin:$PATH"
    export LD_LIBRARY_PATH="/tmp/dcmtk/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
    dic="$(ls -d /tmp/dcmtk/usr/share/libdcmtk*/dicom.dic 2>/dev/null | head -n 1)"
    [ -n "$dic" ] && export DCMDICTPATH="$dic"
  fi
else
  export PYTHONPATH="${PYTHONPATH:-$PWD}"
fi
export PYTHONUNBUFFERED=1

{
  date -u
  command -v nvidia-smi >/dev/null && nvidia-smi
  "$python" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  command -v storescp >/dev/null && storescp --version | head -n 1
} > "$out/machine.txt" 2>&1

status=0
if [ "$size" = full ]; then shape=(--height 1024 --width 512); else shape=(--height 256 --width 128); fi
compile=(--compile)
[ "$device" = cpu ] && compile=()
timeout 240 "$python" bench/inference.py --device "$device" "${shape[@]}" ${compile[@]+"${compile[@]}"} \
  --opt-arch efficientnet_b0 resnet50 --json "$out/inference.json" \
  > "$out/inference.md" 2> "$out/inference.log" || { echo "bench/inference.py failed"; status=1; }

timeout 270 "$python" bench/e2e.py --device "$device" --sections latency --model ${GPU_CHECK_MODELS:-demo full} \
  --studies 2 --size "$size" --quiet-seconds 1 --poll 0.2 --timeout 200 --json "$out/e2e.json" \
  > "$out/e2e.md" 2> "$out/e2e.log" || { echo "bench/e2e.py failed"; status=1; }

"$python" bench/gpu/targets.py "$out/inference.json" "$out/e2e.json" > "$out/targets.md"
cat "$out/machine.txt" "$out/inference.md" "$out/e2e.md" "$out/targets.md"
exit $status
