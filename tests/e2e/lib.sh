# Shared by the nspawn end-to-end tests (systemd.sh, rauc.sh); sourced, not run:
# works from the repository's root, $repo.
# A debootstrapped Debian bookworm tree, cached in /var/cache/fota-agent-e2e
# under a name derived from its package list (so a changed list debootstraps a
# new tree instead of reusing one without the new packages); each run boots a
# fresh copy of it with `systemd-nspawn -b`. Needs root.

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)

# What the cached tree holds besides minbase: systemd and D-Bus for the unit,
# curl for the status endpoint, RAUC and polkit for tests/e2e/rauc.sh.
E2E_PACKAGES=systemd,systemd-sysv,dbus,iproute2,curl,adduser,ca-certificates,rauc,rauc-service,polkitd

e2e_tools() {
    local need=()
    command -v systemd-nspawn >/dev/null || need+=(systemd-container)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
}

# Prints the cached tree's path, debootstrapping it first when missing.
e2e_cached_tree() {
    local cache
    cache=/var/cache/fota-agent-e2e/bookworm-$(echo "$E2E_PACKAGES" | sha256sum | cut -c1-12)
    if [ ! -d "$cache" ]; then
        echo "e2e: debootstrapping bookworm into $cache (once)" >&2
        rm -rf "$cache.tmp"
        mkdir -p "$(dirname "$cache")"
        debootstrap --variant=minbase --include="$E2E_PACKAGES" bookworm "$cache.tmp" >/dev/null
        mv "$cache.tmp" "$cache"
    fi
    echo "$cache"
}

# Sets $root to a fresh copy of the cached tree with the built package
# installed (before the first boot, as on a freshly imaged gateway), removed
# (with any running container) on exit.
e2e_fresh_root() {
    e2e_tools
    local cache deb
    cache=$(e2e_cached_tree)
    local log
    log=$(mktemp /var/tmp/fota-e2e-build.XXXXXX)
    if ! deb=$(bash debian/build.sh 2>"$log" | tail -n 1); then
        echo "e2e: debian/build.sh failed:" >&2
        tail -n 30 "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    root=$(mktemp -d /var/tmp/fota-e2e.XXXXXX)
    nspawn_pid=""
    trap e2e_cleanup EXIT
    cp -a "$cache/." "$root/"
    cp "$deb" "$root/fota-agent.deb"
    chroot_run dpkg -i /fota-agent.deb >"$root.dpkg.log" 2>&1 || { cat "$root.dpkg.log"; exit 1; }
}

e2e_cleanup() {
    e2e_stop
    rm -rf "$root" "$root".*
}

# Stops the running container, if any.
e2e_stop() {
    if [ -n "$nspawn_pid" ]; then
        kill "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
        nspawn_pid=""
    fi
}

passed=0
failed=0
check() { # check NAME COMMAND...: one line per check
    local name=$1; shift
    if "$@"; then
        echo "ok   $name"; passed=$((passed + 1))
    else
        echo "FAIL $name"; failed=$((failed + 1))
    fi
}

wait_for() { # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
}

# Runs a command in the tree without booting it.
chroot_run() { systemd-nspawn -q -D "$root" --register=no --keep-unit "$@"; }

# Boots the tree (extra nspawn arguments: "$@"), sets $nspawn_pid and $leader
# (the container's systemd) and waits until it runs; its console goes to
# $root.console.
e2e_boot() {
    systemd-nspawn -D "$root" -b --register=no --keep-unit --private-network \
        --console=pipe "$@" >>"$root.console" 2>&1 &
    nspawn_pid=$!
    leader=""
    for _ in $(seq 300); do
        leader=$(pgrep -P "$nspawn_pid" -x systemd | head -n 1 || true)
        [ -n "$leader" ] && break
        sleep 0.1
    done
    [ -n "$leader" ] || { echo "container did not start"; cat "$root.console"; exit 1; }
    local state=""
    for _ in $(seq 600); do
        # A container that reboots by itself early (rauc.sh) is up no longer.
        kill -0 "$nspawn_pid" 2>/dev/null || { state="down again"; break; }
        # Bounded: a call into a container that goes down under it can hang.
        state=$(timeout 5 nsenter -t "$leader" -m -u -i -n -p systemctl is-system-running 2>/dev/null || true)
        case "$state" in running|degraded) break ;; esac
        sleep 0.1
    done
    echo "e2e: container is $state"
}

# Runs a command inside the booted container.
ct() { nsenter -t "$leader" -m -u -i -n -p "$@"; }

active() { [ "$(ct systemctl show -p ActiveState --value fota-agent)" = active ]; }

e2e_summary() { # e2e_summary NAME
    echo "$1: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
