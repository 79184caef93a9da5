#!/bin/sh
# Starts a grandchild, writes "<own pid> <grandchild pid>" into $1, then waits.
# $2: "term" exits on SIGTERM, "ignore" ignores SIGTERM (also in the grandchild),
# "plain" keeps the default.
case "$2" in
    term) trap 'echo "terminated by agent" >&2; exit 143' TERM ;;
    ignore) trap '' TERM ;;
esac
sleep 1000 &
# The pids are written once the grandchild runs sleep: a SIGTERM that came
# between its fork and its exec met the shell's trap copied into it, was taken
# there and lost, and sleep then outlived the grace (1 run in 20 of
# cancel_terminates_a_running_update waited its whole 120 s).
while [ "$(cat "/proc/$!/comm" 2>/dev/null)" != sleep ]; do :; done
echo "$$ $!" > "$1.tmp"
mv "$1.tmp" "$1"
echo "PROGRESS 1"
wait
