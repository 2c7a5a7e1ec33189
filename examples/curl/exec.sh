#!/bin/sh
# Run a stored module through the plain exec route: arguments in the X-Args header, environment
# variables as X-Env-<Name> headers, stdin as the request body; the task's stdout is the answer.
#
#   echo input | examples/curl/exec.sh MODULE [ARGS...]
#   examples/curl/exec.sh hello.wasm print_envs < /dev/null
#
# Pass environment variables with WASIMOFF_ENV="GREETING=hi OTHER=x" (names are sent as
# X-Env-GREETING headers). The broker is $WASIMOFF_BROKER (default http://localhost:4080).
# Prints the task's stdout and exits with the task's exit status; exits non-zero when the
# broker refuses the task or the task fails (trap).
set -eu
BROKER="${WASIMOFF_BROKER:-http://localhost:4080}"
if [ $# -lt 1 ]; then
    echo "usage: $0 MODULE [ARGS...]" >&2
    exit 2
fi
module="$1"
shift
args=""
for arg in "$@"; do
    # Single-quote every argument for the broker's shell-style splitting.
    quoted=$(printf "%s" "$arg" | sed "s/'/'\\\\''/g")
    args="$args '$quoted'"
done
set -- -H "X-Args: $args"
for pair in ${WASIMOFF_ENV:-}; do
    set -- "$@" -H "X-Env-${pair%%=*}: ${pair#*=}"
done
headers=$(mktemp)
trap 'rm -f "$headers"' EXIT
if [ -t 0 ]; then
    body=/dev/null
else
    body=-
fi
curl --silent --show-error --fail-with-body --dump-header "$headers" \
    "$@" --data-binary "@$body" "$BROKER/api/client/run/$module"
result=$(sed -n 's/^[Xx]-[Ww]asimoff-[Rr]esult: *\([A-Za-z]*\).*/\1/p' "$headers")
status=$(sed -n 's/^[Xx]-[Ww]asimoff-[Ss]tatus: *\([0-9-]*\).*/\1/p' "$headers")
if [ "$result" != "Ok" ]; then
    echo "exec.sh: the task failed" >&2
    exit 1
fi
exit "${status:-0}"
