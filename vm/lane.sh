#!/bin/bash
# The cgroup v2 test lane: boots Debian's kernel under qemu (software emulation,
# no KVM needed) with the host's root shared read-only, runs the tests marked
# cgroup_v2 there against a real v2 hierarchy with the project's own venv, and
# judges the results the guest wrote back to a writable share (vm/report.py).
#
# Exit 0 when the guest's tests passed, or after one "SKIP" line when this host
# cannot run qemu at all. Exit 1 when a test failed, none passed, or the guest
# did not come up or finish within VM_TIMEOUT.
#
# Knobs (environment): VM_CACHE (kernel + initramfs cache, default .vm-cache),
# VM_PYTHON (default .venv/bin/python), VM_TESTS (paths given to pytest),
# VM_PYTEST_ARGS (extra pytest arguments), VM_TIMEOUT (seconds, default 300),
# VM_MEM (default 1024M), VM_QEMU (default qemu-system-x86_64), VM_SMP
# (default 1: one emulated CPU boots and runs faster than two here), VM_SYSTEMD
# (1: boot the host's systemd in the guest, 0: a plain chroot; default: 1 when
# the host has systemd).
set -euo pipefail
results=""

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${VM_CACHE:-$repo/.vm-cache}
python=${VM_PYTHON:-$repo/.venv/bin/python}
qemu=${VM_QEMU:-qemu-system-x86_64}
timeout_s=${VM_TIMEOUT:-300}
started=$(date +%s.%N)

skip() {
    echo "test-vm: SKIP: $* (the cgroup v2 tests did not run)"
    exit 0
}
fail() {
    echo "test-vm: FAIL: $*"
    exit 1
}

ensure_qemu() {
    command -v "$qemu" >/dev/null && return 0
    [ "$(id -u)" = 0 ] || skip "$qemu is missing and installing it needs root"
    command -v apt-get >/dev/null || skip "$qemu is missing and there is no apt-get"
    local install=(apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends)
    local log
    log=$(mktemp)
    echo "test-vm: installing qemu-system-x86 (apt-get's output: $log)"
    if ! DEBIAN_FRONTEND=noninteractive "${install[@]}" qemu-system-x86 >"$log" 2>&1; then
        # Only a host without fresh package lists needs the update.
        apt-get update -qq >>"$log" 2>&1 || skip "apt-get update failed (see $log)"
        DEBIAN_FRONTEND=noninteractive "${install[@]}" qemu-system-x86 >>"$log" 2>&1 \
            || skip "apt-get install qemu-system-x86 failed (see $log)"
    fi
    rm -f "$log"
    command -v "$qemu" >/dev/null || skip "qemu-system-x86 is installed but $qemu is missing"
}

# The guest boots the host's systemd (over a tmpfs overlay) when the host has
# one, so that the systemd --user path is tested too; VM_SYSTEMD=0 or 1 decides.
use_systemd() {
    case ${VM_SYSTEMD:-auto} in
        0) return 0 ;;
        1) echo systemd ;;
        *) [ -x /lib/systemd/systemd ] && command -v systemd-run >/dev/null && echo systemd ;;
    esac
    return 0
}

default_tests() {
    local tests=(tests/vm) f
    for f in "$repo"/tests/test_cgroup*.py; do
        [ -e "$f" ] && tests+=("tests/${f##*/}")
    done
    echo "${tests[*]}"
}

# The guest's command: pytest in the repository, reached through the read-only
# host mount at the same path; everything writable lives in the guest's /tmp.
# Hypothesis's pytest plugin is left out: it costs seconds under emulation.
write_guest_command() {
    local results=$1 tests=$2
    cat >"$results/cmd.sh" <<EOF
cd '$repo' || exit 98
export HOME=/tmp TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8
export HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "vm: guest up after \$(cut -d' ' -f1 /proc/uptime) s; starting pytest"
{ '$python' -m pytest -m cgroup_v2 -p no:cacheprovider -p no:hypothesispytest -v \
    --junitxml=/tmp/results/junit.xml $tests ${VM_PYTEST_ARGS:-}; echo \$? > /tmp/results/rc; } \
    2>&1 | tee /tmp/results/pytest.log
echo "vm: pytest done at \$(cut -d' ' -f1 /proc/uptime) s"
echo 0 > /tmp/results/done
EOF
}

boot() {
    local results=$1 systemd=$2 rc=0
    local cmdline="console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off labrun.repo=$repo"
    [ -n "$systemd" ] && cmdline="$cmdline labrun.systemd systemd.show_status=error"
    # The console is shown as it comes, without the firmware's escape codes.
    timeout -k 5 "$timeout_s" "$qemu" \
        -machine pc,accel=tcg -cpu max -smp "${VM_SMP:-1}" -m "${VM_MEM:-1024M}" \
        -nographic -no-reboot -nic none \
        -kernel "$cache/vmlinuz" -initrd "$cache/initramfs.cpio.gz" \
        -append "$cmdline" \
        -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
        -virtfs "local,path=$results,mount_tag=results,security_model=none" \
        </dev/null 2>&1 | sed -u -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' -e 's/^/vm| /' \
        || rc=$?
    # The verdict is vm/report.py's, from what the guest wrote back.
    case $rc in
        0) ;;
        124 | 137) echo "test-vm: the guest was stopped after VM_TIMEOUT=${timeout_s}s" ;;
        *) echo "test-vm: qemu exited with status $rc" ;;
    esac
}

main() {
    ensure_qemu
    "$qemu" --version >/dev/null 2>&1 || skip "$qemu does not run here"
    [ -x "$python" ] || fail "no project venv at $python (run: make .venv/.installed)"
    results=$(mktemp -d "${TMPDIR:-/tmp}/labrun-test-vm.XXXXXX")
    trap 'rm -rf "$results"' EXIT

    # Shown as it comes; its last line says why, when it fails.
    local rc=0
    "$repo/vm/build.sh" "$cache" 2>&1 | tee "$results/build.log" || rc=$?
    [ "$rc" = 3 ] && skip "$(tail -n 1 "$results/build.log")"
    [ "$rc" = 0 ] || fail "building the guest's kernel and initramfs failed (see above)"
    rm "$results/build.log"

    local tests=${VM_TESTS:-$(default_tests)}
    local systemd
    systemd=$(use_systemd)
    echo "test-vm: booting $(cat "$cache/key") with ${systemd:-a chroot, no systemd}"
    echo "test-vm: in the guest: pytest -m cgroup_v2 $tests"
    write_guest_command "$results" "$tests"
    boot "$results" "$systemd"
    local seconds
    seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    "$python" "$repo/vm/report.py" "$results" "$seconds"
}

main "$@"
