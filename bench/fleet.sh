#!/usr/bin/env bash
# Fleet simulation: N agents (own controller ids and state dirs) started within
# a second, as after a regional power cut, against bench/fleet_server.py (a DDI
# server written from hawkBit's behaviour: ETag/304, sleep). Phases: start-up
# and steady polling, a 30 s server outage, a rollout to every agent. Prints
# polls per second (mean, peak, peak/mean) per phase, the share of conditional
# polls, the rollout's outcome, and the agents' CPU and RSS. Not a test.
#   bench/fleet.sh [N] [SLEEP_SECONDS]   (FOTA_AGENT_BIN=path skips the build; KEEP=1 keeps the logs)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-200}"
sleep_s="${2:-10}"
# FOTA_AGENT_BIN: a binary built already (default: a release build of this tree).
agent="${FOTA_AGENT_BIN:-}"
if [ -z "$agent" ]; then
    cargo build --release --quiet
    agent="$PWD/target/release/fota-agent"
fi
work=$(mktemp -d /var/tmp/fota-fleet.XXXXXX)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
hms=$(printf '%02d:%02d:%02d' $((sleep_s / 3600)) $((sleep_s % 3600 / 60)) $((sleep_s % 60)))
python3 bench/fleet_server.py "$port" "$work" "$hms" &
server=$!
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$port/x" && break
    sleep 0.1
done

for i in $(seq "$n"); do
    d="$work/a$i"
    mkdir -p "$d"
    cat > "$d/config.toml" <<TOML
[agent]
state_dir = "$d/state"
poll_interval = "1h"

[source]
kind = "hawkbit"
url = "http://127.0.0.1:$port"
controller_id = "gw-$i"
https_only = false
min_poll_interval = "1s"
startup_spread = "${sleep_s}s"

[status]
listen = "off"

[[device]]
id = "gw"
type = "fleet"
handler = "command"
version_scheme = "semver"
version_command = ["/bin/sh", "-c", "cat $d/version 2>/dev/null || echo 1.0.0"]
update_command = ["/bin/sh", "-c", "cp \"\$FOTA_IMAGE\" $d/image && echo 2.0.0 > $d/version"]
TOML
done

t0=$(python3 -c 'import time; print(time.monotonic())')
for i in $(seq "$n"); do
    "$agent" --config "$work/a$i/config.toml" run >"$work/a$i/log" 2>&1 &
    pids+=($!)
done
phase() { python3 -c 'import time; print(time.monotonic())'; }
sleep $((sleep_s * 4))
t_outage=$(phase)
touch "$work/down"
sleep 30
rm "$work/down"
t_back=$(phase)
sleep $((sleep_s * 3))
t_rollout=$(phase)
touch "$work/rollout"
for _ in $(seq $((sleep_s * 12))); do
    [ "$(grep -c ' closed ' "$work/polls.log" || true)" -ge "$n" ] && break
    sleep 1
done
t_end=$(phase)

cpu_rss=$(for p in "${pids[@]}"; do
    awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null | tr '\n' ' '
    awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null
done)

python3 - "$work/polls.log" "$n" "$sleep_s" "$t0" "$t_outage" "$t_back" "$t_rollout" "$t_end" "$cpu_rss" <<'PY'
import collections, sys
log, n, sleep_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0, t_out, t_back, t_roll, t_end = map(float, sys.argv[4:9])
polls, closed, not_modified = [], {}, 0
for line in open(log):
    t, ctrl, what, *rest = line.split()
    if what == "poll":
        polls.append(float(t))
        not_modified += rest[0] == "304"
    else:
        closed[ctrl] = rest[0]
def stats(a, b):
    secs = collections.Counter(int(t - a) for t in polls if a <= t < b)
    span = max(1, int(b - a))
    total = sum(secs.values())
    mean = total / span
    peak = max(secs.values(), default=0)
    idle = sum(1 for s in range(span) if secs[s] == 0) / span
    return total, mean, peak, (peak / mean if mean else 0), idle
rows = [
    ("start-up, first 2 intervals", t0, t0 + 2 * sleep_s),
    ("steady, next 2 intervals", t0 + 2 * sleep_s, t_out),
    ("after a 30 s outage, 2 intervals", t_back, t_back + 2 * sleep_s),
    ("rollout", t_roll, t_end),
]
print(f"{n} agents, server sleep {sleep_s} s")
print(f"| phase | polls | polls/s mean | peak second | peak/mean | seconds without a poll |")
print("|---|---:|---:|---:|---:|---:|")
for name, a, b in rows:
    total, mean, peak, ratio, idle = stats(a, b)
    print(f"| {name} | {total} | {mean:.1f} | {peak} | {ratio:.2f} | {idle:.0%} |")
print(f"\nroot polls answered 304 (conditional, nothing changed): {not_modified}/{len(polls)}")
ok = sum(1 for v in closed.values() if v == "success")
print(f"\nrollout: {ok}/{n} closed with success in {t_end - t_roll:.0f} s")
vals = sys.argv[9].split()
cpu = [int(v) for v in vals[0::2]]
rss = [int(v) for v in vals[1::2]]
if cpu:
    hz = 100
    run = t_end - t0
    print(f"agent CPU: {sum(cpu) / len(cpu) / hz * 1000:.0f} ms per agent over {run:.0f} s; "
          f"RSS {min(rss) / 1024:.1f}-{max(rss) / 1024:.1f} MiB")
PY
