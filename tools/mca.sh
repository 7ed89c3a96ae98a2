#!/usr/bin/env bash
# Models the hot loops of the conv microkernels with llvm-mca and compares them with the FMA bound.
#
#   tools/mca.sh [--cpus "sapphirerapids znver4 skylake-avx512"] [--bin PATH] [--min-fma N] [FUNCTION_REGEX]
#
# It builds `examples/kernel_bench` in release (unless --bin is given), disassembles every
# function whose demangled name matches FUNCTION_REGEX (default: the AVX-512 and AVX2 direct
# and Winograd task entry points, into which the microkernels are inlined), finds the innermost
# loops (a backward jump whose body holds no other backward jump) with at least --min-fma
# (default 8) vector FMAs, and runs each through `llvm-mca-19 -mcpu=CPU`. Per loop and CPU it
# prints the predicted cycles per iteration, the FMA bound of that CPU model (FMAs / FMA
# throughput: two ymm FMAs a cycle everywhere; two zmm FMAs on skylake-avx512, one on znver4
# (two 256-bit halves) and — in LLVM 19's models — one on sapphirerapids and icelake-server,
# whose second 512-bit port (p5) they leave out; so skylake-avx512 is the stand-in for a
# two-port Xeon) and their ratio, i.e. the share of the FMA peak the loop can reach from a
# warm L1.
#
# Needs llvm-mca-19 (Debian: apt-get install llvm-19) and objdump (binutils). A model, not a
# measurement: it assumes every load hits L1 and knows nothing about the loop's trip count.
set -euo pipefail

cpus="sapphirerapids znver4 skylake-avx512"
bin=""
min_fma=8
regex='(direct_task|wino_task)_avx(512|2)$'
while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) cpus="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --min-fma) min_fma="$2"; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "mca.sh: unknown option $1" >&2; exit 2 ;;
        *) regex="$1"; shift ;;
    esac
done

mca=$(command -v llvm-mca-19 || true)
if [ -z "$mca" ]; then
    echo "mca.sh: llvm-mca-19 not found (Debian: apt-get install llvm-19)" >&2
    exit 1
fi
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release -q -p hrnet-runtime --example kernel_bench)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/kernel_bench"
fi
[ -x "$bin" ] || { echo "mca.sh: no binary at $bin" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Function symbols (address, size, demangled name) matching the regex.
nm -C --size-sort -S "$bin" | awk -v re="$regex" '
    { name = $4; for (i = 5; i <= NF; i++) name = name " " $i }
    ($3 == "t" || $3 == "T") && name ~ re { print $1, $2, name }' > "$work/funcs"
if [ ! -s "$work/funcs" ]; then
    echo "mca.sh: no function matches /$regex/ in $bin" >&2
    exit 1
fi

printf '%-44s %-8s %5s %5s %5s' "function @ loop" "" "insns" "zFMA" "yFMA"
for c in $cpus; do printf ' | %-16s %6s %6s %5s' "$c" "cyc/it" "bound" "%pk"; done
echo

n=0
while read -r addr size name; do
    start=$((16#$addr))
    stop=$((start + 16#$size))
    objdump -d --no-show-raw-insn --start-address=$start --stop-address=$stop "$bin" |
        awk '/^ *[0-9a-f]+:\t/ { a = $1; sub(":", "", a); sub(/^ *[0-9a-f]+:\t/, ""); print a "\t" $0 }' \
        > "$work/dis"
    # Innermost loops: [target, jump] of each backward jump with no other backward jump inside.
    awk -F'\t' -v min="$min_fma" '
        function hex(s,   i, v) {
            v = 0
            for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
            return v
        }
        { addr[NR] = hex($1); insn[NR] = $2; idx[addr[NR]] = NR }
        END {
            nl = 0
            for (i = 1; i <= NR; i++) {
                if (insn[i] ~ /^j[a-z]+ +[0-9a-f]+ /) {
                    split(insn[i], p, / +/); t = hex(p[2])
                    if (t < addr[i] && (t in idx)) { nl++; ls[nl] = idx[t]; le[nl] = i }
                }
            }
            for (k = 1; k <= nl; k++) {
                inner = 1
                for (m = 1; m <= nl; m++)
                    if (m != k && le[m] > ls[k] && le[m] < le[k]) inner = 0
                if (!inner) continue
                f = 0
                for (i = ls[k]; i <= le[k]; i++) if (insn[i] ~ /^vfn?m(add|sub)/) f++
                if (f < min) continue
                printf "LOOP %x\n", addr[ls[k]]
                for (i = ls[k]; i < le[k]; i++) print insn[i]
                split(insn[le[k]], p, / +/); print p[1] " .Lloop"
            }
        }' "$work/dis" > "$work/loops"
    awk -v dir="$work" '/^LOOP / { f = dir "/loop_" $2 ".s"; print $2 > (dir "/list"); next }
        { print >> f }' "$work/loops"
    [ -f "$work/list" ] || continue
    while read -r la; do
        f="$work/loop_$la.s"
        # AT&T from objdump; nops and their prefixes are dropped, the loop label added.
        { echo ".Lloop:"; grep -v -E '^(nop|data16|cs nop|xchg +%ax,%ax)' "$f" | sed -e 's/<[^>]*>//'; } > "$f.mca"
        insns=$(grep -c -v '^\.Lloop:' "$f.mca")
        zf=$(grep -E '^vfn?m(add|sub)' "$f.mca" | grep -c '%zmm' || true)
        yf=$(grep -E '^vfn?m(add|sub)' "$f.mca" | grep -c '%ymm' || true)
        short=$(echo "$name" | sed -e 's/.*:://')
        printf '%-44s %-8s %5d %5d %5d' "$short @ $la" "" "$insns" "$zf" "$yf"
        for c in $cpus; do
            out=$("$mca" -mcpu="$c" -iterations=200 "$f.mca" 2>&1 || true)
            cyc=$(echo "$out" | awk '/^Total Cycles:/ { c = $3 } /^Iterations:/ { i = $2 } END { if (i) printf "%.2f", c / i }')
            # zmm FMAs per cycle in the model (see the header).
            bound=$(awk -v z="$zf" -v y="$yf" -v c="$c" 'BEGIN {
                zr = (c ~ /^(znver4|znver5|sapphirerapids|icelake-server|graniterapids)$/) ? 1 : 2
                printf "%.2f", z / zr + y / 2 }')
            pct=$(awk -v b="$bound" -v m="$cyc" 'BEGIN { if (m > 0) printf "%.0f", 100 * b / m; else print "?" }')
            printf ' | %-16s %6s %6s %5s' "" "${cyc:-?}" "$bound" "$pct"
        done
        echo
        n=$((n + 1))
    done < "$work/list"
    rm -f "$work/list" "$work"/loop_*
done < "$work/funcs"

[ "$n" -gt 0 ] || { echo "mca.sh: no loop with >= $min_fma FMAs found" >&2; exit 1; }
