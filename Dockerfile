# syntax=docker/dockerfile:1
#
# The pywharf server image.
#
#   docker build -t pywharf .
#   docker run --rm -p 8888:8888 -v pywharf-root:/pywharf-root pywharf        # waits for POST /initialize/
#   docker run --rm pywharf --help                                              # any pywharf command
#
# With no arguments the container starts `pywharf server /pywharf-root` on 0.0.0.0:8888 through
# environment mode (PYWHARF_COMMAND / PYWHARF_COMMAND_<FLAG>, below): that is how a GitHub
# Actions service container, which cannot pass arguments, runs it. Arguments replace all of it.
#
# tests/test_dockerfile.py replays this recipe without Docker (wheel -> fresh venv -> the
# ENTRYPOINT with exactly these ENV lines -> /healthz and the HEALTHCHECK command), and
# .github/workflows/ci.yml builds the image and smoke-tests it.

ARG PYTHON_VERSION=3.12

# --- build: the wheel, and nothing else leaves this stage -------------------------------------
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pywharf_core ./pywharf_core
COPY pywharf_backends ./pywharf_backends
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# --- runtime: the wheel and its dependencies (all published as wheels: no compiler needed) ----
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 pywharf \
    && useradd --system --uid 10001 --gid pywharf --no-create-home \
        --home-dir /pywharf-root --shell /usr/sbin/nologin pywharf \
    && mkdir /pywharf-root \
    && chown pywharf:pywharf /pywharf-root

# Optional dependencies to install with the wheel: "s3" (boto3) for the s3 backend, so one image
# serves every shipped backend; --build-arg PYWHARF_EXTRAS= builds a smaller image without it.
ARG PYWHARF_EXTRAS=s3

# The wheel is bind-mounted from the build stage, so no copy of it stays in a layer. DL3013
# (pin versions) does not apply: the wheel is this exact build, its dependencies are ranges.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    wheel="$(echo /dist/pywharf-*.whl)" \
    && pip install --no-cache-dir "${wheel}${PYWHARF_EXTRAS:+[${PYWHARF_EXTRAS}]}"

ENV PYWHARF_COMMAND=server \
    PYWHARF_COMMAND_ROOT=/pywharf-root \
    PYWHARF_COMMAND_HOST=0.0.0.0 \
    PYWHARF_COMMAND_PORT=8888

USER 10001:10001
WORKDIR /pywharf-root
VOLUME ["/pywharf-root"]
EXPOSE 8888

# slim has no curl: ask /healthz with the standard library (proxies ignored: it is our own port).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('PYWHARF_COMMAND_PORT', '8888'), timeout=4)"]

ENTRYPOINT ["pywharf"]
