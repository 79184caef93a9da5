#!/usr/bin/env bash
# Runs every test binary of `cargo test --all-targets` (or the ones named) N
# times in a row and prints runs / failures per binary, and how many agents its
# tests started and left running: a test that fails one
# run in ten is a bug (a race in the code or in the test), and one run of the
# suite does not show it. Not part of .ci/run (N runs of the suite take N times
# as long). The output of each failed run is kept under OUT.
#   bench/repeat.sh [N] [NAME...]    NAME: `lib`, `fota-agent` (the binary's unit
#                                     tests) or an integration test (`engine`, ...)
# N defaults to 20. OUT=DIR keeps the logs and the copies of the binaries that
# ran there (default: a new dir under /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
shift || true
out=${OUT:-$(mktemp -d /var/tmp/fota-repeat.XXXXXX)}
mkdir -p "$out"

# name<TAB>executable of each test binary, as cargo builds them.
list=$(cargo test --locked --all-targets --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        t = m["target"]
        name = "lib" if "lib" in t["kind"] else t["name"]
        print(name + "\t" + m["executable"])
')
[ -n "$list" ] || { echo "no test binaries (does it build? cargo test --no-run)" >&2; exit 1; }

# Copies of the binaries, so a build during the runs does not swap them.
mkdir -p "$out/bin"
list=$(while IFS=$'\t' read -r name exe; do
    cp "$exe" "$out/bin/$name"
    printf '%s\t%s\n' "$name" "$out/bin/$name"
done <<<"$list")

# cargo test runs each binary from the package root with these set.
export CARGO_MANIFEST_DIR=$PWD CARGO_PKG_NAME=fota-agent
# Agents a test started and left running (a test must stop what it starts).
agent_bin=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/fota-agent
agents() { { pgrep -f "^$agent_bin " || true; } | sort; }
total_failed=0
total_left=0
printf '| %-22s | %4s | %6s | %8s | %12s |\n' binary runs failed seconds "left running"
printf '|%s|%s|%s|%s|%s|\n' ------------------------ ------ -------- ---------- --------------
while IFS=$'\t' read -r name exe; do
    if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then
        continue
    fi
    failed=0
    before=$(agents)
    start=$(date +%s)
    for i in $(seq "$runs"); do
        if ! "$exe" >"$out/$name.$i.log" 2>&1; then
            failed=$((failed + 1))
        else
            rm -f "$out/$name.$i.log"
        fi
    done
    left=$(comm -13 <(echo "$before") <(agents) | grep -c . || true)
    printf '| %-22s | %4d | %6d | %8d | %12d |\n' "$name" "$runs" "$failed" "$(($(date +%s) - start))" "$left"
    total_failed=$((total_failed + failed))
    total_left=$((total_left + left))
done <<<"$list"
echo
echo "failed runs: $total_failed (logs of each in $out); agents left running: $total_left"
[ "$total_failed" -eq 0 ] && [ "$total_left" -eq 0 ]
