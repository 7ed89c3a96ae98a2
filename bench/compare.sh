#!/usr/bin/env bash
# One table, one run: hrnet AOT and JIT against ONNX Runtime, OpenVINO and PyTorch on the same
# machine, at 1 and 2 threads, for one or more configs. A benchmark, never a test.
#
# usage: bench/compare.sh [CONFIG.yaml ...]      (default: W32 256x192)
#        bench/compare.sh --family               (W32 and W48 at 256x192 and 384x288)
#   SIZE="H W"                                   input size (segmentation: any; default the config's)
#   THREADS="1 2"                                thread counts
#   RUNS=10 ROUNDS=3                             timed runs per engine, thread count and round;
#                                                the engines take turns round by round, and the
#                                                table shows the median of their round medians
#                                                (a shared VM's speed drifts over minutes)
#   PEERS=path/to/shared/bench/peers.py          (default: ../shared/bench/peers.py beside the repo)
#   PYTHON=python with torch timm safetensors pyyaml numpy onnx onnxruntime openvino
set -euo pipefail
cd "$(dirname "$0")/.."
pose=tests/data/configs/pose
if [ "${1:-}" = "--family" ]; then
    set -- "$pose"/w32_256x192_adam_lr1e-3.yaml "$pose"/w32_384x288_adam_lr1e-3.yaml \
        "$pose"/w48_256x192_adam_lr1e-3.yaml "$pose"/w48_384x288_adam_lr1e-3.yaml
fi
[ $# -gt 0 ] || set -- "$pose"/w32_256x192_adam_lr1e-3.yaml
runs=${RUNS:-10}
size=()
if [ -n "${SIZE:-}" ]; then read -r -a size <<< "--size $SIZE"; fi
thread_counts=${THREADS:-1 2}
rounds=${ROUNDS:-3}
peers=${PEERS:-../shared/bench/peers.py}
python=${PYTHON:-python3}
[ -f "$peers" ] || echo "note: $peers not found; timing hrnet's engines only" >&2

cargo build --release --quiet --bin hrnetc
hrnetc=target/release/hrnetc
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for config in "$@"; do
    name=$(basename "$config" .yaml)
    # Build the AOT engine's crate first, so that no timed run pays for it.
    "$hrnetc" bench "$config" "${size[@]}" --engine aot --runs 1 > /dev/null
    for round in $(seq "$rounds"); do
        for threads in $thread_counts; do
            for engine in aot jit; do
                "$hrnetc" bench "$config" "${size[@]}" --engine "$engine" --threads "$threads" --runs "$runs" |
                    sed "s/^{/{\"config\":\"$name\",\"round\":$round,/" >> "$results"
            done
            if [ -f "$peers" ]; then
                "$python" "$peers" "$config" "${size[@]}" --threads "$threads" --runs "$runs" \
                    --engines torch-eager,onnxruntime,openvino 2>/dev/null | grep '^{' |
                    sed "s/^{/{\"config\":\"$name\",\"round\":$round,/" >> "$results" || true
            fi
        done
    done
done

if grep -q -w avx512f /proc/cpuinfo; then isa="AVX-512"; else isa="AVX2+FMA, no AVX-512"; fi
echo "# batch 1, fp32, $rounds rounds of $runs runs each — $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($isa)"
"$python" - "$results" <<'PY'
import json, sys
import statistics
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
# One row per (config, engine, threads): the median of the round medians, the overall minimum.
groups = {}
for r in runs:
    groups.setdefault((r['config'], r['engine'], r['threads']), []).append(r)
rows = [{'config': c, 'engine': e, 'threads': t,
         'median_ms': statistics.median(x['median_ms'] for x in g),
         'min_ms': min(x['min_ms'] for x in g)}
        for (c, e, t), g in groups.items()]
best = {}
for r in rows:
    if r['engine'] in ('onnxruntime', 'openvino'):
        k = (r['config'], r['threads'])
        best[k] = min(best.get(k, float('inf')), r['median_ms'])
configs = list(dict.fromkeys(r['config'] for r in rows))
print(f"{'config':<28}{'engine':<14}{'threads':>8}{'median ms':>11}{'min ms':>9}{'vs best of ORT/OpenVINO':>25}")
for r in sorted(rows, key=lambda r: (configs.index(r['config']), r['threads'], r['median_ms'])):
    k = (r['config'], r['threads'])
    ratio = f"{r['median_ms'] / best[k]:.2f}" if k in best else '-'
    print(f"{r['config']:<28}{r['engine']:<14}{r['threads']:>8}{r['median_ms']:>11.1f}{r['min_ms']:>9.1f}{ratio:>25}")
PY
