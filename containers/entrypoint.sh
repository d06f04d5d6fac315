#!/bin/sh
# Entrypoint of the Falconet containers (containers/Dockerfile and containers/Dockerfile.jetson).
#
#   (no arguments) or "serve [flags]"  serve the model package at $FALCONET_MODEL (default /model)
#   healthcheck                        exit 0 when the server answers /readyz (the image's HEALTHCHECK)
#   anything else                      run it as given, e.g. "falconet bench /model --threads 1,4"
#
# Settings come from the environment so compose files and `docker run -e` can change them:
#   FALCONET_MODEL (/model), FALCONET_HOST (0.0.0.0), FALCONET_PORT (8080), FALCONET_BACKEND (the
#   package's default: onnx; the Jetson image sets onnx-gpu).
set -eu

MODEL="${FALCONET_MODEL:-/model}"
HOST="${FALCONET_HOST:-0.0.0.0}"
PORT="${FALCONET_PORT:-8080}"

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case "$1" in
    serve)
        shift
        if [ ! -f "$MODEL/manifest.json" ]; then
            echo "falconet: no model package at $MODEL (no manifest.json)." >&2
            echo "  Mount one:  docker run -v \$PWD/runs/NAME:$MODEL:ro ..." >&2
            echo "  or bake it: docker build --build-arg MODEL=runs/NAME ..." >&2
            exit 64
        fi
        if [ -n "${FALCONET_BACKEND:-}" ]; then
            set -- --backend "$FALCONET_BACKEND" "$@"
        fi
        exec falconet serve "$MODEL" --host "$HOST" --port "$PORT" "$@"
        ;;
    healthcheck)
        # Python is always there (curl is not in slim images); /readyz answers 200 once the model is loaded.
        exec python -c "import sys, urllib.request
try:
    urllib.request.urlopen('http://127.0.0.1:$PORT/readyz', timeout=4)
except Exception as exc:
    sys.exit(f'not ready: {exc}')"
        ;;
    *)
        exec "$@"
        ;;
esac
