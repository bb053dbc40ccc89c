#!/usr/bin/env bash
# Run the pywharf image with the file_system example config: files and logs go to the named
# volume "pywharf-root", the config is mounted read-only. Arguments after the image name are a
# `pywharf` command line (the image's ENTRYPOINT is `pywharf`).
set -euo pipefail
cd "$(dirname "$0")"

IMAGE="${PYWHARF_IMAGE:-ghcr.io/pywharf/pywharf:0.3.0}"

docker run --detach --name pywharf --restart unless-stopped \
    --publish 8888:8888 \
    --volume pywharf-root:/pywharf-root \
    --volume "$PWD/file_system/config.toml:/etc/pywharf/config.toml:ro" \
    "$IMAGE" \
    server /pywharf-root --config /etc/pywharf/config.toml

# Without arguments the container starts `pywharf server /pywharf-root` (environment mode) and
# waits to be configured with POST /initialize/, as in a CI service container:
#   docker run --rm -p 8888:8888 "$IMAGE"
#   curl -F 'config=@file_system/config.toml' http://localhost:8888/initialize/
