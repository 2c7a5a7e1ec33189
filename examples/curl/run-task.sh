#!/bin/sh
# Run a task over Connect RPC with JSON: POST a `wasimoff.v1.Task.Wasip1.Request` (proto3 JSON,
# as in examples/tasks/*.json) to RunWasip1 and print the JSON response.
#
#   examples/curl/run-task.sh TASK.json
#
# The module the task names must be uploaded first (see upload.sh). Byte fields in the response
# (stdout, stderr) are base64. The broker is $WASIMOFF_BROKER (default http://localhost:4080).
# Exits non-zero when the broker refuses the task (the body is a Connect error,
# {"code": ..., "message": ...}) or when the task itself failed (a trap: {"error": ...}).
set -eu
BROKER="${WASIMOFF_BROKER:-http://localhost:4080}"
if [ $# -ne 1 ]; then
    echo "usage: $0 TASK.json" >&2
    exit 2
fi
# Task files carry an "@type" key (so that they also work as a google.protobuf.Any); the
# broker ignores it on Connect, since the procedure names the type.
response=$(curl --silent --show-error --fail-with-body \
        -H 'content-type: application/json' \
        --data-binary @"$1" \
        "$BROKER/api/client/wasimoff.v1.Tasks/RunWasip1") || {
    status=$?
    echo "$response" >&2
    exit "$status"
}
echo "$response"
case "$response" in
    *'"ok":'*) exit 0 ;;
    *) exit 1 ;;
esac
