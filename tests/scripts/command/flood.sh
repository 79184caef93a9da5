#!/bin/sh
# Fills both pipes far beyond their buffers (one 1 MiB stderr line, 20000 stdout
# lines), then fails with a short reason.
{ head -c 1048576 /dev/zero | tr '\0' e; echo; } >&2
yes "MESSAGE spam" | head -n 20000
yes "PROGRESS" | head -n 1000
echo "final reason" >&2
exit 7
