#!/usr/bin/env bash
# Every table of docs/benchmarks.md, measured in one run on this machine, one script call
# per table, each call's output in its own file under OUTDIR (default
# var/bench/all-<date>), with the machine and the revision at the top of each.
#
#   bench/all.sh [OUTDIR]            # about 30 minutes on a quiet 2-core machine
#   BENCH_SECTIONS="ingest decode" bench/all.sh   # some of them
#
# Sections, in order: ingest (quiet), ingest-busy (two processes spinning on the CPU),
# busy (receiving while inferring, with a 2-minute soak), decode, inference (with
# torch.compile), render, e2e (latency and the uncompressed throughput variants) and
# e2e-j2k (the JPEG 2000 variants and the worker scaling on PostgreSQL). Run it with
# nothing else on the machine: its figures are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${1:-var/bench/all-$(date -u +%Y%m%dT%H%MZ)}
SECTIONS=${BENCH_SECTIONS:-ingest ingest-busy busy decode inference render e2e e2e-j2k}
BASELINE=${BENCH_BASELINE:-25df986}
mkdir -p "$OUT"

header() {
    echo "# $(date -u +%FT%TZ) revision $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
        "$(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr); load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $*"
}

run() {
    local name=$1
    shift
    echo "== $name: $*" >&2
    local start=$SECONDS
    { header "$@"; "$@"; } >"$OUT/$name.txt" 2>"$OUT/$name.log"
    echo "   $((SECONDS - start)) s -> $OUT/$name.txt" >&2
}

J2K_VARIANTS=(
    "baseline:worker.pipeline=false,worker.batch_studies=1"
    "batch4:worker.pipeline=false,worker.batch_studies=4"
    "pipelined:worker.pipeline=true,worker.batch_studies=1"
    "batch4+pipelined:worker.pipeline=true,worker.batch_studies=4"
    "batch4+pipelined+2 decoders:worker.pipeline=true,worker.batch_studies=4,inference.decode_processes=2"
)

for section in $SECTIONS; do
    case $section in
    ingest) run ingest "$PYTHON" bench/ingest.py --images 20 --repeat 5 --baseline "$BASELINE" ;;
    ingest-busy) run ingest-busy "$PYTHON" bench/ingest.py --images 20 --repeat 5 \
        --baseline "$BASELINE" --busy 2 --without orthanc ;;
    busy) run busy "$PYTHON" bench/busy.py --soak-minutes 2 ;;
    decode) run decode "$PYTHON" bench/decode.py --repeats 5 ;;
    inference) run inference "$PYTHON" bench/inference.py --compile ;;
    render) run render "$PYTHON" bench/render.py --repeats 3 ;;
    e2e) run e2e "$PYTHON" bench/e2e.py --sections latency variants \
        --json "$OUT/e2e.json" ;;
    e2e-j2k) run e2e-j2k "$PYTHON" bench/e2e.py --sections variants scaling \
        --throughput-syntax j2k --variants "${J2K_VARIANTS[@]}" --json "$OUT/e2e-j2k.json" ;;
    *) echo "unknown section $section" >&2; exit 2 ;;
    esac
done
echo "all tables in $OUT" >&2
