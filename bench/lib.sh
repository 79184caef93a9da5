# Shared by the benchmarks that compare tools on one image: sourced, not run.

# bench_need PACKAGE...: installs with apt those not installed yet.
bench_need() {
    local need=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

# The agent binary: FOTA_AGENT_BIN, else a release build of this tree.
bench_agent() {
    agent="${FOTA_AGENT_BIN:-${CARGO_TARGET_DIR:-target}/release/fota-agent}"
    [ -n "${FOTA_AGENT_BIN:-}" ] || cargo build --release --quiet
}

# start_nginx WORK: serves WORK/srv on a random loopback port (config and pid in
# WORK/nginx), and again under /100mbit/ at 100 Mbit/s; sets port, base and
# nginx_pid, and returns once it answers FILE.
start_nginx() {
    local work=$1 file=$2
    mkdir -p "$work/nginx"
    port=$((20000 + RANDOM % 20000))
    cat >"$work/nginx/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $work/nginx/pid; error_log $work/nginx/error.log;
events { worker_connections 64; }
http { access_log off; sendfile on; client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx; types { application/octet-stream bin mender swu; }
  server { listen 127.0.0.1:$port; root $work/srv;
    # The same files at a gateway's link speed, 100 Mbit/s.
    location /100mbit/ { alias $work/srv/; limit_rate 12500k; } } }
CONF
    nginx -c "$work/nginx/nginx.conf" &
    nginx_pid=$!
    base="http://127.0.0.1:$port"
    for _ in $(seq 100); do curl -sf -o /dev/null -r 0-0 "$base/$file" && break; sleep 0.1; done
}

# measure NAME CMD...: one run's wall seconds and peak RSS (KiB) appended to
# $work/NAME, after the script's own clean_outputs and a sync: what an earlier
# run left unwritten (`curl -o`, Mender's unsynced staging file) is not written
# back during, and charged to, the next one.
measure() {
    local name=$1
    shift
    clean_outputs
    sync
    /usr/bin/time -f '%e %M' -o "$work/t" "$@" >"$work/last.log" 2>&1 ||
        { echo "$name failed:" >&2; tail -n 20 "$work/last.log" >&2; exit 1; }
    cat "$work/t" >>"$work/$name"
}

# median NAME: "seconds s, RSS MiB" of the median of $runs runs (by time).
median() {
    sort -n "$work/$1" | awk -v n="$runs" 'NR == int((n + 1) / 2) {printf "%.2f s, %.1f MiB", $1, $2 / 1024}'
}

# rss_peaks PID: samples /proc/PID/status every 20 ms until PID exits; prints the
# largest RssAnon and RssFile seen and the last VmHWM, in KiB ("anon file hwm").
# Anonymous memory is the process's own (heap, stacks, buffers); file-backed is
# the mapped binary and libraries, shared with the page cache.
rss_peaks() {
    local pid=$1 anon=0 file=0 hwm=0 key value _
    while [ -r "/proc/$pid/status" ]; do
        while read -r key value _; do
            case $key in
            RssAnon:) ((value > anon)) && anon=$value ;;
            RssFile:) ((value > file)) && file=$value ;;
            VmHWM:) hwm=$value ;;
            esac
        done <"/proc/$pid/status" 2>/dev/null || break
        sleep 0.02
    done
    echo "$anon $file $hwm"
}

# rss_parts PID: where PID's resident memory is now, in MiB: anonymous, the
# binary's own mapping, libc + libm + ld.so, and other files; then PSS, which
# charges each shared page to its sharers in part (libc is shared system-wide).
rss_parts() {
    awk -v exe="$(readlink "/proc/$1/exe")" '
        /^[0-9a-f]+-[0-9a-f]+ / { name = $6 }
        /^Pss:/ { pss += $2 }
        /^Rss:/ {
            if (name == exe) bin += $2
            else if (name ~ /\/(libc|libm|ld-linux)[^\/]*$/) lib += $2
            else if (name ~ /^\//) other += $2
            else anon += $2
        }
        END { printf "anon %.1f, binary %.1f, libc/libm/ld %.1f, other files %.1f MiB; PSS %.1f MiB", anon / 1024, bin / 1024, lib / 1024, other / 1024, pss / 1024 }' "/proc/$1/smaps"
}
