#!/bin/sh
# Update command: records what it was given into $1, then speaks the stdout protocol.
out="$1"
{
    for a in "$@"; do echo "ARG=$a"; done
    env | grep '^FOTA_' | sort
    echo "SHA256_SET=${FOTA_SHA256-unset}"
    echo "PWD=$(pwd)"
    echo "STDIN_BYTES=$(wc -c | tr -d ' ')"
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "PROGRESS 10"
echo "PROGRESS 5"
echo "PROGRESS 150"
echo "PROGRESS abc"
echo "PROGRESS -3"
echo "PROGRESSIVE 60"
echo "MESSAGE writing flash"
printf 'bytes \377\376 that are not UTF-8\n'
echo "some other line"
echo "warning on stderr" >&2
printf 'PROGRESS 50%%\r\n'
printf 'PROGRESS 100'
