#!/usr/bin/env bash
# One table, one run: hrnet AOT and JIT against ONNX Runtime, OpenVINO and PyTorch on the same
# machine, at 1 and 2 threads. A benchmark, never a test.
#
# usage: bench/compare.sh [CONFIG.yaml] [RUNS]
#   PEERS=path/to/shared/bench/peers.py  (default: ../shared/bench/peers.py beside the repo)
#   PYTHON=python with torch timm safetensors pyyaml numpy onnx onnxruntime openvino
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-tests/data/configs/pose/w32_256x192_adam_lr1e-3.yaml}
runs=${2:-20}
peers=${PEERS:-../shared/bench/peers.py}
python=${PYTHON:-python3}

cargo build --release --quiet --bin hrnetc
hrnetc=target/release/hrnetc
results=$(mktemp)
for threads in 1 2; do
    for engine in aot jit; do
        "$hrnetc" bench "$config" --engine "$engine" --threads "$threads" --runs "$runs" >> "$results"
    done
    if [ -f "$peers" ]; then
        "$python" "$peers" "$config" --threads "$threads" --runs "$runs" \
            --engines torch-eager,onnxruntime,openvino 2>/dev/null | grep '^{' >> "$results" || true
    fi
done

echo "# $(basename "$config"), batch 1, fp32 — $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$python" - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
best = {}
for r in rows:
    if r['engine'] in ('onnxruntime', 'openvino'):
        t = r['threads']
        best[t] = min(best.get(t, float('inf')), r['median_ms'])
print(f"{'engine':<14}{'threads':>8}{'median ms':>11}{'min ms':>9}{'vs best of ORT/OpenVINO':>25}")
for r in sorted(rows, key=lambda r: (r['threads'], r['median_ms'])):
    ratio = r['median_ms'] / best[r['threads']] if r['threads'] in best else float('nan')
    print(f"{r['engine']:<14}{r['threads']:>8}{r['median_ms']:>11.1f}{r['min_ms']:>9.1f}{ratio:>25.2f}")
PY
rm -f "$results"
