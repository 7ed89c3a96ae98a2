#!/usr/bin/env bash
# Runs the runtime's convolution kernels on an emulated CPU that has AVX-512, so that the
# AVX-512 paths (`direct_task_avx512`, `wino_task_avx512`) are tested on machines without it.
#
# How: the test binaries are built statically (glibc, +crt-static) and put, with the fixtures
# they read, into an initramfs whose /init is a tiny static C program. A Debian kernel boots it
# from an ISO in Bochs (the only emulator in Debian with AVX-512: QEMU 7.2's TCG has none), the
# tests print to the serial port, and this script reads the serial log.
#
# Usage (Debian bookworm, as root, from anywhere in a checkout):
#   tools/avx512-emu/run.sh
# Environment:
#   HRNET_EMU_TARGET_DIR  cargo target dir (default: <repo>/target-emu); the kernel package,
#                         the serial log and the extracted guest output are kept under
#                         <target dir>/avx512-emu/
#   HRNET_EMU_SUITES      which test binaries run in the guest, in order (default:
#                         "numerics kernels_conv generated"; see `suite_cmd` below)
#   HRNET_EMU_TIMEOUT     seconds the emulated machine may run (default: 5400; a run takes
#                         about 20 minutes on a 2-core EPYC)
#   HRNET_EMU_CPU         Bochs CPU model (default: corei7_skylake_x)
#   HRNET_EMU_KEEP        1: keep the temporary directory (initramfs, ISO, bochsrc)
# Exit status 0 only if every guest test passed and the output shows the Avx512 path ran.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../.." && pwd)
target_dir=${HRNET_EMU_TARGET_DIR:-$repo/target-emu}
suites=${HRNET_EMU_SUITES:-numerics kernels_conv generated}
timeout_s=${HRNET_EMU_TIMEOUT:-5400}
# Skylake-X: AVX-512 F/CD/BW/DQ/VL. Bochs 2.7's `tigerlake` model hangs the 6.1 kernel early
# in boot (an exception loop right after "LSM: Security Framework initializing").
cpu_model=${HRNET_EMU_CPU:-corei7_skylake_x}
state_dir=$target_dir/avx512-emu
triple=x86_64-unknown-linux-gnu

say() { printf '[avx512-emu] %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (installs Debian packages)"
[[ -r /etc/debian_version ]] || die "needs Debian (bookworm): bochs, isolinux, a Debian kernel"
command -v cargo >/dev/null || die "needs cargo (the project's Rust toolchain)"
mkdir -p "$state_dir"

# --- 1. Debian packages -------------------------------------------------------------------
# bochs: the emulator (built with AVX-512, SMP and its debugger); bochsbios/vgabios: its
# firmware; isolinux + syslinux-common + genisoimage: a bootable ISO (Bochs boots that from
# its BIOS; it has no direct kernel loader for 64-bit Linux); cpio: the initramfs; gcc +
# libc6-dev: the static /init; binutils: strip/readelf.
packages=(bochs bochsbios vgabios isolinux syslinux-common genisoimage cpio gcc libc6-dev binutils util-linux)
missing=()
for p in "${packages[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == 'install ok installed' ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. A Debian kernel -------------------------------------------------------------------
# The package that linux-image-amd64 currently depends on, downloaded (not installed) into
# the state dir; only its vmlinuz is used. Not committed anywhere.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [[ -z $kpkg ]]; then
    apt-get update -qq
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[[ -n $kpkg ]] || die "cannot resolve linux-image-amd64 to a kernel package"
vmlinuz=$state_dir/vmlinuz-${kpkg#linux-image-}
if [[ ! -s $vmlinuz ]]; then
    say "downloading $kpkg"
    (cd "$state_dir" && rm -f "$kpkg"_*.deb && apt-get download -q "$kpkg" >/dev/null 2>&1) ||
        die "apt-get download $kpkg"
    deb=$(ls "$state_dir/$kpkg"_*.deb)
    dpkg-deb --fsys-tarfile "$deb" | tar -xOf - --wildcards './boot/vmlinuz-*' >"$vmlinuz.tmp"
    mv "$vmlinuz.tmp" "$vmlinuz"
    rm -f "$deb"
fi

# --- 3. Static test binaries --------------------------------------------------------------
# Explicit --target so that RUSTFLAGS (+crt-static) apply to the test binaries only, not to
# build scripts and proc macros (which cannot be static). No musl target needed: glibc's
# static libraries (libc6-dev) do. Release, no debug info: emulation is slow, the initramfs small.
say "building static test binaries in $target_dir"
cargo_args=()
for s in $suites; do
    case $s in
        numerics | generated) cargo_args+=(-p hrnet-tests --test "$s") ;;
        kernels_conv) cargo_args+=(-p hrnet-runtime --test kernels_conv) ;;
        *) die "unknown suite '$s' (known: numerics kernels_conv generated)" ;;
    esac
done
json=$state_dir/cargo-build.json
(cd "$repo" &&
    CARGO_TARGET_DIR=$target_dir RUSTFLAGS='-C target-feature=+crt-static' \
        CARGO_PROFILE_RELEASE_DEBUG=0 \
        cargo test --release --no-run --target "$triple" --message-format=json-render-diagnostics \
        "${cargo_args[@]}" >"$json") || die "cargo build (see above)"

# The executable of test target $1, from cargo's JSON messages.
test_exe() {
    grep '"reason":"compiler-artifact"' "$json" | grep '"kind":\["test"\]' |
        grep "\"name\":\"$1\"" | grep -o '"executable":"[^"]*"' | tail -n1 | cut -d'"' -f4
}

# The guest command line of suite $1 (program path in the guest, then its arguments).
suite_cmd() {
    case $1 in
        # Both fixtures through the plan executor on every available Isa at 1 and 2 threads;
        # prints one line per run ("...: plan Avx512 1 threads: 1.23e-6").
        numerics) echo "/emu/bin/numerics --exact plan_with_runtime_kernels_every_isa_and_thread_count --nocapture --test-threads=1" ;;
        # Every kernel (direct, Winograd F2/F4, on-the-fly weights, epilogues) on every
        # available Isa at 1 and 2 threads against an f64 reference; ISAs agree.
        kernels_conv) echo "/emu/bin/kernels_conv --nocapture --test-threads=1" ;;
        # The generated (AOT) W8 model on every available Isa at 1 and 2 threads.
        generated) echo "/emu/bin/generated --exact w8_pose_full_depth --nocapture --test-threads=1" ;;
    esac
}

# --- 4. Initramfs, ISO, bochsrc in a temp dir ---------------------------------------------
work=$(mktemp -d /tmp/hrnet-avx512-emu.XXXXXX)
bochs_pid=
cleanup() {
    if [[ -n $bochs_pid ]] && kill -0 "$bochs_pid" 2>/dev/null; then kill "$bochs_pid" 2>/dev/null || true; fi
    if [[ ${HRNET_EMU_KEEP:-0} == 1 ]]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

root=$work/root
mkdir -p "$root/emu/bin" "$work/iso/isolinux"
for s in $suites; do
    exe=$(test_exe "$s")
    [[ -n $exe && -x $exe ]] || die "no executable for test target $s in cargo's output"
    # A dynamically linked binary would not start in the guest (no ld.so there).
    if readelf -l "$exe" | grep 'Requesting program interpreter' >/dev/null; then
        die "$exe is not statically linked"
    fi
    strip -o "$root/emu/bin/$s" "$exe"
    printf '%s %s\n' "$s" "$(suite_cmd "$s")" >>"$root/emu/plan"
done

# The tests find fixtures through CARGO_MANIFEST_DIR (tests/data of the checkout), compiled in
# as an absolute path: recreate that path in the guest with only the files the tests read.
for f in tiny_pose w8_pose_256x192; do
    mkdir -p "$root$repo/tests/data/$f"
    for file in config.yaml input.npy expected.npy weights.safetensors; do
        cp "$repo/tests/data/$f/$file" "$root$repo/tests/data/$f/"
    done
done

# /init: runs the plan, prints HRNET-EMU-* markers, powers off. C, not a shell: the initramfs
# holds no shell or libc; a static C program is ~800 KB and needs nothing else.
cat >"$work/init.c" <<'EOF'
/* PID 1 of the guest. Mounts /proc, /sys, /dev; stdio on the console (serial port); prints
 * the CPU's SIMD flags; runs each line of /emu/plan ("<name> <program> [args...]", single
 * spaces); prints "HRNET-EMU-RESULT <name> exit=<code>" for each and "HRNET-EMU-DONE";
 * powers off. Never exits: PID 1 exiting panics the kernel. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

extern char **environ;

static void cpu_flags(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    int cpus = 0, printed = 0;
    if (!f) {
        printf("HRNET-EMU-CPU no /proc/cpuinfo\n");
        return;
    }
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "processor", 9) == 0)
            cpus++;
        if (strncmp(line, "model name", 10) == 0 && cpus == 1)
            printf("HRNET-EMU-CPU %s", line);
        if (strncmp(line, "flags", 5) == 0 && !printed) {
            printed = 1;
            printf("HRNET-EMU-CPU simd flags:");
            for (char *w = strtok(line, " \t\n"); w; w = strtok(NULL, " \t\n"))
                if (strncmp(w, "avx", 3) == 0 || strcmp(w, "fma") == 0)
                    printf(" %s", w);
            printf("\n");
        }
    }
    printf("HRNET-EMU-CPU processors: %d\n", cpus);
    fclose(f);
}

static int run(const char *name, char **argv) {
    pid_t pid = fork();
    if (pid < 0) {
        printf("HRNET-EMU-RESULT %s exit=fork-failed\n", name);
        return 1;
    }
    if (pid == 0) {
        execve(argv[0], argv, environ);
        fprintf(stderr, "execve %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) {
        printf("HRNET-EMU-RESULT %s exit=%d\n", name, WEXITSTATUS(status));
        return WEXITSTATUS(status) != 0;
    }
    printf("HRNET-EMU-RESULT %s exit=signal-%d\n", name, WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    return 1;
}

int main(void) {
    mkdir("/proc", 0755);
    mkdir("/sys", 0755);
    mkdir("/dev", 0755);
    mkdir("/tmp", 01777);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    printf("\nHRNET-EMU-BEGIN\n");
    cpu_flags();
    int failed = 0;
    FILE *plan = fopen("/emu/plan", "r");
    char line[4096];
    if (!plan) {
        printf("HRNET-EMU-RESULT plan exit=missing\n");
        failed = 1;
    }
    while (plan && fgets(line, sizeof line, plan)) {
        char *argv[64];
        int argc = 0;
        for (char *w = strtok(line, " \n"); w && argc < 63; w = strtok(NULL, " \n"))
            argv[argc++] = w;
        argv[argc] = NULL;
        if (argc < 2 || argv[0][0] == '#')
            continue;
        printf("HRNET-EMU-RUN %s:", argv[0]);
        for (int i = 1; i < argc; i++)
            printf(" %s", argv[i]);
        printf("\n");
        failed |= run(argv[0], argv + 1);
    }
    printf("HRNET-EMU-DONE failed=%d\n", failed);
    fflush(stdout);
    /* The serial port sends at its baud rate in guest time: let it drain before power-off. */
    tcdrain(1);
    sleep(2);
    sync();
    reboot(RB_POWER_OFF);
    for (;;) /* power-off failed: run.sh stops Bochs when it sees HRNET-EMU-DONE */
        pause();
}
EOF
gcc -static -O2 -Wall -Wextra -o "$root/init" "$work/init.c"

initrd=$work/iso/initrd.img
# Uncompressed: the guest would spend emulated minutes decompressing; reading is cheap.
(cd "$root" && find . -print | cpio -o -H newc -R 0:0 --quiet >"$initrd")
cp "$vmlinuz" "$work/iso/vmlinuz"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$work/iso/isolinux/"
# Kernel command line:
# - console=ttyS0: kernel and test output go to the serial port, which Bochs writes to a file.
# - clearcpuid=pku,xsaves,xsavec: Bochs 2.7 reports a wrong XSAVE layout (CPUID 0xD:
#   no PKRU sub-leaf, compacted size reported as the standard one), on which Linux disables
#   XSAVE altogether, and with it AVX and AVX-512. Without PKU and the compacted format the
#   kernel uses the standard layout, which Bochs reports right.
# - RUST_BACKTRACE=1: unknown to the kernel, so it lands in /init's environment (and the tests').
cat >"$work/iso/isolinux/isolinux.cfg" <<'EOF'
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img console=ttyS0,115200 quiet clearcpuid=pku,xsaves,xsavec RUST_BACKTRACE=1
EOF
genisoimage -quiet -o "$work/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table -J -R "$work/iso"

serial=$state_dir/serial.log
rm -f "$serial"
# - Debian's bochs has no `nogui` display; rfb with timeout=0 runs without waiting for a
#   viewer (and Bochs runs in its own network namespace, so its listening socket is private).
# - 2 CPUs: the tests run 1 and 2 threads. clock sync=none: guest time follows instructions.
# - error/info messages off: the kernel probes MSRs Bochs does not know, thousands of times.
cat >"$work/bochsrc" <<EOF
memory: guest=1536, host=1536
cpu: model=$cpu_model, count=2, ips=40000000, reset_on_triple_fault=0
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
ata0-master: type=cdrom, path=$work/boot.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$serial
display_library: rfb, options="timeout=0"
clock: sync=none, time0=local
log: $work/bochs.log
panic: action=fatal
error: action=ignore
info: action=ignore
debug: action=ignore
EOF
# Debian builds bochs with its internal debugger, which stops before the first instruction:
# "c" continues; at the end the debugger reads EOF from /dev/null and quits.
echo c >"$work/debugger.rc"

# --- 5. Boot and wait ---------------------------------------------------------------------
say "booting $kpkg on Bochs ($cpu_model, 2 CPUs); suites: $suites; timeout ${timeout_s}s"
say "serial log: $serial"
netns=()
if unshare --net true 2>/dev/null; then netns=(unshare --net --); fi
start=$(date +%s)
"${netns[@]}" bochs -q -f "$work/bochsrc" -rc "$work/debugger.rc" </dev/null >"$work/bochs.out" 2>&1 &
bochs_pid=$!

# Echoes serial log lines $1..$2, prefixed with the host seconds since boot. (The guest's
# own clock, and so the test harness's "finished in", is far slower than the host's.)
echo_guest() {
    sed -n "$1,$2p" "$serial" | tr -d '\r' | sed "s/^/  guest $(($(date +%s) - start))s| /" >&2
}
shown=0 # serial log lines already echoed
verdict=""
while :; do
    sleep 10
    if [[ -f $serial ]]; then
        total=$(wc -l <"$serial")
        if ((total > shown)); then
            echo_guest $((shown + 1)) "$total"
            shown=$total
        fi
        if grep -aq 'HRNET-EMU-DONE' "$serial"; then verdict=finished; fi
        if grep -aq 'Kernel panic' "$serial"; then verdict=panic; fi
    fi
    if [[ -n $verdict ]] || ! kill -0 "$bochs_pid" 2>/dev/null; then break; fi
    if (($(date +%s) - start > timeout_s)); then verdict=timeout; break; fi
done
# Power-off makes Bochs exit; give it a moment, then stop it.
for _ in 1 2 3 4 5 6; do kill -0 "$bochs_pid" 2>/dev/null || break; sleep 5; done
kill "$bochs_pid" 2>/dev/null || true
wait "$bochs_pid" 2>/dev/null || true
bochs_pid=
elapsed=$(($(date +%s) - start))
[[ -f $serial ]] && echo_guest $((shown + 1)) '$'
say "emulated run took ${elapsed}s"

# --- 6. Verdict ---------------------------------------------------------------------------
[[ -f $serial ]] || { tail -n 20 "$work/bochs.out" >&2; die "no serial output (Bochs failed to start?)"; }
out=$state_dir/guest-output.txt
tr -d '\r' <"$serial" | sed -n '/^HRNET-EMU-BEGIN/,$p' >"$out"
case $verdict in
    finished) ;;
    panic) die "the guest kernel panicked (see $serial)" ;;
    timeout) die "no result within ${timeout_s}s (see $serial; raise HRNET_EMU_TIMEOUT)" ;;
    *) tail -n 20 "$work/bochs.out" >&2; die "Bochs stopped before the tests finished (see $serial)" ;;
esac

status=0
grep -q '^HRNET-EMU-CPU simd flags:.* avx512f' "$out" || { say "the guest CPU has no avx512f"; status=1; }
for s in $suites; do
    line=$(grep "^HRNET-EMU-RESULT $s " "$out" || true)
    if [[ $line != *" exit=0" ]]; then
        say "suite $s: ${line:-no result}"
        status=1
    fi
done
grep -q '^HRNET-EMU-DONE failed=0' "$out" || status=1
if [[ " $suites " == *" numerics "* ]]; then
    # The proof that the AVX-512 kernels ran: the plan test's per-Isa lines, for both
    # fixtures and both thread counts (it only lists instruction sets the CPU has).
    for f in tiny_pose w8_pose_256x192; do
        for t in 1 2; do
            grep -q "/$f: plan Avx512 $t threads: " "$out" ||
                { say "no 'plan Avx512 $t threads' line for $f"; status=1; }
        done
    done
    say "per-Isa parity (max |out - expected| / max |expected|):"
    grep -o '[^ ]*: plan [A-Za-z0-9]* [12] threads: [^ ]*' "$out" | sed "s#^$repo/##" >&2 || true
fi
((status == 0)) || die "see $out"
say "OK: all guest tests passed, AVX-512 path included ($out)"
