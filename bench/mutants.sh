#!/usr/bin/env bash
# Mutation testing of the code where one wrong line installs the wrong image or
# bricks a device: cargo-mutants (crates.io) makes small wrong changes to each
# file and runs the tests that should notice. Prints caught / missed / timeout /
# unviable per file. Not part of .ci/run: it builds once per mutant. See
# docs/testing.md.
#   bench/mutants.sh [--summary] [AREA...]      AREA: checksum download engine update persist
#                                   trust murmur3 (default: all but murmur3)
# Two passes per area, so most mutants cost one small build: the unit tests
# (`--lib`, one test binary) first, then only the survivors (`--iterate`) against
# the integration binaries that drive the file. Builds go to a target dir of
# their own (MUTANTS_TARGET, default /var/tmp/fota-mutants-target) without debug
# info (faster links), at nice 10, so a shared machine keeps working; the
# dependencies are built once and kept for the next run.
# MUTANTS_OUT=DIR keeps the output there (default: a new dir under /var/tmp);
# rerunning into the same DIR retests only what was not caught before.
# MUTANTS_JOBS=N runs N mutants at a time (default 1; each one builds).
# Installs cargo-mutants with `cargo install --locked` when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants

# area → files mutated | integration binaries that drive those files (run
# against what the unit tests let through).
declare -A files=(
    [checksum]="src/checksum.rs src/checksum/parallel.rs"
    [murmur3]="src/checksum/murmur3.rs"
    [download]="src/download/writer.rs src/download/partial.rs src/download/commit.rs"
    [engine]="src/engine/fetch.rs src/engine/decide.rs"
    [update]="src/engine/update.rs"
    [persist]="src/persist/json_file.rs src/persist/outbox.rs"
    [trust]="src/trust/admit.rs src/trust/bundle.rs src/trust/checksums.rs src/trust/signature.rs"
)
declare -A tests=(
    [checksum]="download engine_download"
    [murmur3]="download"
    [download]="download claims"
    [engine]="engine claims engine_download"
    [update]="engine claims reliability engine_link"
    [persist]="engine reliability"
    [trust]="trust engine_download"
)
order=(checksum download engine update persist trust murmur3)
# --summary: only the table of an earlier run (MUTANTS_OUT).
summary_only=false
[ "${1:-}" = --summary ] && { summary_only=true; shift; }
areas=("$@")
[ ${#areas[@]} -gt 0 ] || areas=("${order[@]:0:6}")

out=${MUTANTS_OUT:-$(mktemp -d /var/tmp/fota-mutants.XXXXXX)}
mkdir -p "$out"
export CARGO_TARGET_DIR=${MUTANTS_TARGET:-/var/tmp/fota-mutants-target}
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
echo "mutants of: ${areas[*]} (output in $out)"

# `--iterate` leaves only the last run in mutants.out: what every run caught or
# found unviable is kept in $out/<area>.caught / .unviable; what is still
# missed or timing out is the last run's.
mutants() {
    local area=$1
    shift
    nice -n 10 cargo mutants "$@" || true
    for kind in caught unviable; do
        cat "$out/$area/mutants.out/$kind.txt" >>"$out/$area.$kind" 2>/dev/null || true
    done
}

for area in "${areas[@]}"; do
    $summary_only && break
    [ -n "${files[$area]:-}" ] || { echo "unknown area $area (one of: ${order[*]})" >&2; exit 2; }
    args=(--no-shuffle --jobs "${MUTANTS_JOBS:-1}" --output "$out/$area"
        --build-timeout 1200)
    for f in ${files[$area]}; do args+=(--file "$f"); done
    # A rerun into the same output retests only what was not caught.
    again=()
    [ -d "$out/$area/mutants.out" ] && again=(--iterate)
    # Exit status 2 means "some mutants missed", 3 "some timed out": the
    # summary says which. The targets go in as cargo args (--cargo-arg), so
    # each mutant builds only them: arguments after `--` reach `cargo test` but
    # not its `--no-run` build.
    mutants "$area" "${args[@]}" "${again[@]}" --cargo-arg=--lib >>"$out/$area.lib.log" 2>&1
    if [ -s "$out/$area/mutants.out/missed.txt" ] || [ -s "$out/$area/mutants.out/timeout.txt" ]; then
        targets=(--cargo-arg=--lib)
        for t in ${tests[$area]}; do targets+=("--cargo-arg=--test=$t"); done
        mutants "$area" "${args[@]}" --iterate "${targets[@]}" >>"$out/$area.log" 2>&1
    fi
done

printf '\n%-34s %7s %7s %8s %9s\n' file caught missed timeout unviable
for area in "${areas[@]}"; do
    dir="$out/$area/mutants.out"
    for f in ${files[$area]}; do
        count() { sort -u "$@" 2>/dev/null | grep -c "^$f:" || true; }
        printf '%-34s %7s %7s %8s %9s\n' "$f" "$(count "$out/$area.caught")" \
            "$(count "$dir/missed.txt")" "$(count "$dir/timeout.txt")" \
            "$(count "$out/$area.unviable")"
    done
    if [ -s "$dir/missed.txt" ]; then
        echo "missed in $area:"
        sed 's/^/  /' "$dir/missed.txt"
    fi
done
