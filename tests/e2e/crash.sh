#!/usr/bin/env bash
# Crash campaign: SIGKILLs the agent, or its whole process tree, at a random moment
# of an update, then runs it again cleanly and checks the invariants an operator
# relies on after a power cut or an OOM kill:
#   - the agent starts and the clean run finishes (exit 0);
#   - the device runs the newest firmware, byte for byte, and reports it;
#   - the state file parses, holds no update in flight and records that version's
#     success;
#   - no temporary or partial file is left in the state directory;
#   - no process of the killed run is left (an orphaned update command is stopped);
#   - the clean run reports at most two outcomes: the interrupted update's (if it
#     was interrupted) and its own.
# The stage at the kill is read from the state file: before the update (start-up,
# the source), download/transfer, the update step, or after it.
# Each round publishes a new version, so every kill lands in a real update.
#
#   tests/e2e/crash.sh [ROUNDS]      default 10; FOTA_AGENT_BIN picks the binary
# Prints one line per round and a summary; exits 1 when an invariant broke.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds="${1:-10}"
bin="${FOTA_AGENT_BIN:-target/debug/fota-agent}"
[ -x "$bin" ] || cargo build --quiet
bin="$(realpath "$bin")"

work="$(mktemp -d)"
trap 'pkill -KILL -f "$work/" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/firmware/crash-dev" "$work/state"

# The device: its flash is a file; an update copies the image in slices (so a
# kill can land mid-write) into flash.new and renames it, as a device with an
# A/B or write-then-switch bootloader does.
cat > "$work/device.sh" <<'EOF'
#!/bin/sh
set -eu
flash="$(dirname "$0")/flash"
case "$1" in
version)
    if [ -f "$flash" ]; then head -c 64 "$flash" | head -n 1 | sed 's/^CRASH-DEV FIRMWARE //'; else echo 0; fi
    ;;
update)
    size=$(wc -c < "$2")
    : > "$flash.new"
    for pct in 0 25 50 75; do
        echo "PROGRESS $pct"
        dd if="$2" of="$flash.new" bs=4096 skip=$((pct * size / 409600)) \
            seek=$((pct * size / 409600)) count=$((size / 16384 + 1)) conv=notrunc status=none
        sleep 0.3
    done
    cp "$2" "$flash.new"
    mv "$flash.new" "$flash"
    echo "PROGRESS 100"
    ;;
esac
EOF
chmod +x "$work/device.sh"

cat > "$work/agent.toml" <<EOF
[agent]
state_dir = "$work/state"
poll_interval = "1h"
update_timeout = "1m"
confirm_window = "5s"

[source]
kind = "directory"
path = "$work/firmware"

[[device]]
id = "dev"
type = "crash-dev"
handler = "command"
policy = "immediate"
version_command = ["$work/device.sh", "version"]
update_command = ["$work/device.sh", "update"]
command_timeout = "10s"
EOF

publish() {
    local v="$1" dir="$work/firmware/crash-dev"
    rm -f "$dir"/*
    { printf 'CRASH-DEV FIRMWARE %s\n' "$v"; head -c 4000000 /dev/urandom; } > "$dir/fw-$v.bin"
    cat > "$dir/fw-$v.properties" <<EOF
version = $v
image = fw-$v.bin
sha256Hash = $(sha256sum "$dir/fw-$v.bin" | cut -d' ' -f1)
EOF
}

state_json="$work/state/devices/dev.json"
failures=0
declare -A stages=() kinds=()
fail() {
    echo "  INVARIANT BROKEN (round $round): $*"
    failures=$((failures + 1))
}

started=$(date +%s)
for round in $(seq 1 "$rounds"); do
    version=$((round + 1))
    publish "$version"

    # The run to kill, in a session of its own so the whole tree can be killed.
    setsid "$bin" --config "$work/agent.toml" run --once > "$work/killed.log" 2>&1 &
    leader=$!
    # A third of the kills within 60 ms: start-up and the download.
    if [ $((RANDOM % 3)) -eq 0 ]; then ms=$((RANDOM % 60)); else ms=$((RANDOM % 2000)); fi
    sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
    if [ $((RANDOM % 2)) -eq 0 ]; then
        kind=agent
        kill -KILL "$leader" 2>/dev/null || true
    else
        kind=tree
        kill -KILL -- "-$leader" 2>/dev/null || true
    fi
    wait "$leader" 2>/dev/null || true
    # The state the kill left tells the stage it hit.
    stage="$(python3 -c '
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except Exception:
    print("start"); sys.exit()
f = s.get("in_flight")
o = s.get("last_outcome") or {}
print(f["phase"] if f else "done" if o.get("version") == sys.argv[2] else "start")' \
        "$state_json" "$version" 2>/dev/null || echo start)"
    stages[$stage]=$(( ${stages[$stage]:-0} + 1 ))
    kinds[$kind]=$(( ${kinds[$kind]:-0} + 1 ))

    # The clean run.
    if ! timeout 60 "$bin" --config "$work/agent.toml" run --once > "$work/clean.log" 2>&1; then
        fail "the clean run failed: $(tail -n 3 "$work/clean.log")"
    fi
    if ! cmp -s "$work/flash" "$work/firmware/crash-dev/fw-$version.bin"; then
        fail "the device's flash is not firmware $version"
    fi
    reported="$("$work/device.sh" version)"
    [ "$reported" = "$version" ] || fail "the device reports $reported, not $version"
    python3 - "$state_json" "$version" <<'EOF' || fail "state: $(cat "$state_json" 2>/dev/null | tr -d '\n')"
import json, sys
s = json.load(open(sys.argv[1]))
assert "in_flight" not in s, "an update is still in flight"
o = s["last_outcome"]
assert o["version"] == sys.argv[2] and o["outcome"] == "success", o
EOF
    leftovers="$(find "$work/state" \( -name '*.tmp*' -o -name '.tmp*' -o -name '*.part' -o -name '*.meta' \) -print)"
    [ -z "$leftovers" ] || fail "leftover files: $leftovers"
    if pgrep -f "$work/device.sh" > /dev/null; then
        fail "a process of the killed run is still running: $(pgrep -af "$work/device.sh")"
    fi
    outcomes=$(grep -c 'outcome=' "$work/clean.log" || true)
    [ "$outcomes" -le 2 ] || fail "the clean run reported $outcomes outcomes"
    printf 'round %3d: killed the %-5s during %-8s -> %s\n' "$round" "$kind" "$stage" \
        "$([ "$failures" -eq 0 ] && echo ok || echo "$failures broken so far")"
done

echo "crash campaign: $rounds rounds in $(( $(date +%s) - started )) s;" \
    "kills: agent ${kinds[agent]:-0}, whole tree ${kinds[tree]:-0};" \
    "stage at the kill: before the update ${stages[start]:-0}, download/transfer" \
    "${stages[transfer]:-0}, update step ${stages[update]:-0}, after it ${stages[done]:-0};" \
    "invariants broken: $failures"
[ "$failures" -eq 0 ]
