# shellcheck shell=bash
# Helpers of scripts/test-arm64: tools, binfmt, the cached Debian bookworm arm64 root, mounts, cleanup.
#
# Why these choices (see ../shared/research/arm64-emulation.md):
# - qemu 10 from bookworm-backports, not bookworm's 7.2: 7.2 shows the host's x86 /proc/cpuinfo to
#   the guest and onnxruntime's cpu detection crashes on it (signal 11); qemu 10 emulates an ARM
#   /proc/cpuinfo for the QEMU_CPU it runs. The .deb is fetched with a private apt state and only
#   unpacked into the cache: nothing is installed on the host.
# - A binfmt_misc entry (flag F: the interpreter is opened once, so no qemu copy is needed inside the
#   root): pip and venv start sub-processes (ensurepip, the PEP 517 build of falconet), which only run
#   if the kernel itself knows how to start an arm64 program. The entry is ours (falconet-aarch64) and
#   is removed on exit.
# - debootstrap (also only unpacked into the cache) builds a real Debian root whose second stage runs
#   arm64 dpkg and maintainer scripts under emulation: a real system, not an unpacked file tree.
#
# Root is needed for: mounting binfmt_misc and registering the entry, chroot, and the proc/sys/dev
# mounts inside the root. Everything else (x86 models, comparison, the log) runs as is.

ARM64_BINFMT_NAME=falconet-aarch64
ARM64_MOUNTED_BINFMT=0

log() { printf '[test-arm64 %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# apt with a private state in the cache: downloads Debian packages without touching the host's apt.
private_apt() {
    local dir="$CACHE/apt"
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/etc"
    [ -f "$dir/etc/status" ] || : >"$dir/etc/status"
    cat >"$dir/etc/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-backports main
EOF
    apt-get -q -o Dir::Etc::SourceList="$dir/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" -o Dir::State::status="$dir/etc/status" \
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null \
        -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o APT::Architecture=amd64 "$@"
}

# qemu-aarch64 (10.x, static) and debootstrap, unpacked into $CACHE/tools once.
fetch_tools() {
    QEMU="$CACHE/tools/qemu-aarch64"
    DEBOOTSTRAP_DIR="$CACHE/tools/debootstrap/usr/share/debootstrap"
    DEBOOTSTRAP="$CACHE/tools/debootstrap/usr/sbin/debootstrap"
    export DEBOOTSTRAP_DIR
    if [ -x "$QEMU" ] && [ -x "$DEBOOTSTRAP" ]; then
        return
    fi
    log "fetching qemu-user (bookworm-backports) and debootstrap into $CACHE/tools (no host install)"
    local dl="$CACHE/tools/dl"
    rm -rf "$dl" && mkdir -p "$dl"
    private_apt update >/dev/null
    (cd "$dl" && private_apt download qemu-user/bookworm-backports debootstrap/bookworm >/dev/null)
    mkdir -p "$dl/x"
    for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$dl/x"; done
    mkdir -p "$CACHE/tools/debootstrap/usr"
    cp "$dl/x/usr/bin/qemu-aarch64" "$QEMU"
    rm -rf "$CACHE/tools/debootstrap/usr/sbin" "$CACHE/tools/debootstrap/usr/share"
    mkdir -p "$CACHE/tools/debootstrap/usr/share"
    cp -a "$dl/x/usr/sbin" "$CACHE/tools/debootstrap/usr/"
    cp -a "$dl/x/usr/share/debootstrap" "$CACHE/tools/debootstrap/usr/share/"
    rm -rf "$dl"
    "$QEMU" --version | head -1 >&2
}

binfmt_register() {
    local dir=/proc/sys/fs/binfmt_misc
    if [ ! -e "$dir/register" ]; then
        mount -t binfmt_misc binfmt_misc "$dir" || die "cannot mount binfmt_misc (needs root and a kernel with binfmt_misc)"
        ARM64_MOUNTED_BINFMT=1
    fi
    [ -e "$dir/$ARM64_BINFMT_NAME" ] && echo -1 >"$dir/$ARM64_BINFMT_NAME"
    # The aarch64 ELF magic and mask of qemu's own scripts/qemu-binfmt-conf.sh.
    printf '%s' ":$ARM64_BINFMT_NAME:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:$QEMU:F" \
        >"$dir/register" || die "cannot register the binfmt entry"
    log "binfmt entry $ARM64_BINFMT_NAME -> $QEMU (removed on exit)"
}

binfmt_unregister() {
    local dir=/proc/sys/fs/binfmt_misc
    [ -e "$dir/$ARM64_BINFMT_NAME" ] && echo -1 >"$dir/$ARM64_BINFMT_NAME"
    if [ "$ARM64_MOUNTED_BINFMT" = 1 ]; then umount "$dir" 2>/dev/null || true; fi
}

# Every mount under a directory, deepest first.
mounts_under() {
    awk -v root="$1" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

unmount_all() {
    local target
    for target in $(mounts_under "$1"); do
        umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || log "could not unmount $target"
    done
}

# Processes whose root directory is inside $1 (the chroot's): ours by construction.
kill_chrooted() {
    local root="$1" pid link signalled=0
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        link=$(readlink "/proc/$pid/root" 2>/dev/null) || continue
        case "$link" in "$root"|"$root"/*) kill -TERM "$pid" 2>/dev/null && log "stopped process $pid left in the root" && signalled=1;; esac
    done
    [ "$signalled" = 1 ] || return 0
    sleep 1
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        link=$(readlink "/proc/$pid/root" 2>/dev/null) || continue
        case "$link" in "$root"|"$root"/*) kill -KILL "$pid" 2>/dev/null;; esac
    done
}

# A background job of this script and everything it started (by parent pid, deepest first).
kill_tree() {
    local child
    for child in $(pgrep -P "$1"); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}

# Stop every process in a root, then unmount everything under it: on exit, and at start for what a
# killed run left (a bind mount left on /work makes the next `rm -rf` fail with "Device or resource
# busy"). $2, when given, is logged with the mounts found. Call with the lock held.
clear_root() {
    local root="$1" why="${2:-}" stale
    stale="$(mounts_under "$root")"
    kill_chrooted "$root"
    if [ -n "$stale" ] && [ -n "$why" ]; then log "$why under $root: $(echo $stale)"; fi
    unmount_all "$root"
}

mount_root() {
    local root="$1"
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
}

# Run a command in the root under emulation, with a clean environment (none of the host's pip
# settings leak in) and the given QEMU_CPU. pip trusts the root's CA store (which holds the host's
# extra CAs, see sync_ca_certs) rather than its own vendored certifi. The run lock (fd 9) is not
# passed in: a process left in the root must not keep the next run waiting.
in_root() {
    local cpu="$1"; shift
    chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 QEMU_CPU="$cpu" PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} "$@" 9>&-
}

# The egress of some build machines re-signs TLS with its own CA; copy the host's extra CAs in.
sync_ca_certs() {
    local src=/usr/local/share/ca-certificates dst="$ROOTFS/usr/local/share/ca-certificates"
    [ -d "$src" ] && [ -n "$(ls -A "$src" 2>/dev/null)" ] || return 0
    if ! diff -rq "$src" "$dst" >/dev/null 2>&1; then
        mkdir -p "$dst" && cp -a "$src"/. "$dst"/
        in_root cortex-a72 update-ca-certificates >/dev/null
        log "copied the host's extra CA certificates into the root"
    fi
}

# Debian bookworm arm64, minbase + python3-venv + ca-certificates, built once into $CACHE/rootfs.
build_root() {
    ROOTFS="$CACHE/rootfs-bookworm-arm64"
    if [ -f "$ROOTFS/.falconet-complete" ]; then
        log "cached root: $ROOTFS (built $(cat "$ROOTFS/.falconet-complete"))"
        return
    fi
    local tmp="$ROOTFS.partial" t0
    unmount_all "$tmp"
    rm -rf "$tmp" "$ROOTFS"
    t0=$(date +%s)
    log "debootstrap stage 1 (x86 side: download and unpack) into $tmp"
    "$DEBOOTSTRAP" --arch=arm64 --variant=minbase --foreign --include=python3-venv,ca-certificates \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg bookworm "$tmp" "$MIRROR" >"$WORK/debootstrap1.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap1.log" >&2; die "debootstrap stage 1"; }
    log "debootstrap stage 2 (arm64 dpkg under emulation)"
    chroot "$tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin QEMU_CPU=cortex-a72 /debootstrap/debootstrap --second-stage \
        >"$WORK/debootstrap2.log" 2>&1 || { unmount_all "$tmp"; tail -20 "$WORK/debootstrap2.log" >&2; die "debootstrap stage 2"; }
    unmount_all "$tmp"
    rm -rf "$tmp/var/cache/apt/archives/"*.deb
    echo "$(date -u +%FT%TZ) in $(( $(date +%s) - t0 )) s" >"$tmp/.falconet-complete"
    mv "$tmp" "$ROOTFS"
    log "root built in $(( $(date +%s) - t0 )) s"
}
