#!/bin/sh
# Upload a WebAssembly module or zip archive to the broker's storage, optionally under an alias.
#
#   examples/curl/upload.sh FILE [ALIAS]
#
# Prints the stored file's `sha256:` ref. The broker is $WASIMOFF_BROKER
# (default http://localhost:4080). Exits non-zero when the upload fails.
set -eu
BROKER="${WASIMOFF_BROKER:-http://localhost:4080}"
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 FILE [ALIAS]" >&2
    exit 2
fi
url="$BROKER/api/storage/upload"
if [ $# -eq 2 ]; then
    url="$url?name=$2"
fi
# --fail-with-body: a non-2xx answer prints the broker's message and exits 22.
curl --silent --show-error --fail-with-body \
    -H 'content-type: application/octet-stream' \
    --data-binary "@$1" "$url"
echo
