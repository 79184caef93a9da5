#!/usr/bin/env bash
# Mutation testing of the code where one wrong line installs the wrong image or
# bricks a device: cargo-mutants (crates.io) makes small wrong changes to each
# file and runs the test binaries that should notice. Prints caught / missed /
# timeout / unviable per file. Not part of .ci/run: it builds and tests once per
# mutant, which takes hours on the whole list. See docs/testing.md.
#   bench/mutants.sh [AREA...]      AREA: checksum download engine persist trust
#                                   (default: all of them)
# MUTANTS_JOBS=N runs N mutants at a time (default 1; each one builds).
# Installs cargo-mutants with `cargo install --locked` when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants

# area → files mutated | test binaries run against each mutant (plus --lib).
declare -A files=(
    [checksum]="src/checksum.rs src/checksum/murmur3.rs src/checksum/parallel.rs"
    [download]="src/download/writer.rs src/download/partial.rs"
    [engine]="src/engine/fetch.rs src/engine/decide.rs src/engine/update.rs"
    [persist]="src/persist/json_file.rs src/persist/outbox.rs"
    [trust]="src/trust/admit.rs src/trust/bundle.rs src/trust/checksums.rs src/trust/signature.rs"
)
declare -A tests=(
    [checksum]="download engine_download hawkbit thingsboard"
    [download]="download engine_download"
    [engine]="engine engine_download engine_link claims"
    [persist]="engine reliability hawkbit thingsboard mcs"
    [trust]="trust trust_config engine_download"
)
order=(checksum download engine persist trust)
areas=("$@")
[ ${#areas[@]} -gt 0 ] || areas=("${order[@]}")

out=$(mktemp -d /var/tmp/fota-mutants.XXXXXX)
echo "mutants of: ${areas[*]} (output in $out)"
for area in "${areas[@]}"; do
    [ -n "${files[$area]:-}" ] || { echo "unknown area $area (one of: ${order[*]})" >&2; exit 2; }
    args=()
    for f in ${files[$area]}; do args+=(--file "$f"); done
    test_args=(--lib)
    for t in ${tests[$area]}; do test_args+=(--test "$t"); done
    # Exit status 2 means "some mutants missed": the summary says which.
    cargo mutants --no-shuffle --jobs "${MUTANTS_JOBS:-1}" --output "$out/$area" \
        "${args[@]}" -- "${test_args[@]}" >"$out/$area.log" 2>&1 || true
done

printf '\n%-34s %7s %7s %8s %9s\n' file caught missed timeout unviable
for area in "${areas[@]}"; do
    dir="$out/$area/mutants.out"
    for f in ${files[$area]}; do
        count() { grep -c "^$f:" "$dir/$1.txt" 2>/dev/null || true; }
        printf '%-34s %7s %7s %8s %9s\n' "$f" "$(count caught)" "$(count missed)" \
            "$(count timeout)" "$(count unviable)"
    done
    if [ -s "$dir/missed.txt" ]; then
        echo "missed in $area:"
        sed 's/^/  /' "$dir/missed.txt"
    fi
done
