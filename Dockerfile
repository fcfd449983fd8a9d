# syntax=docker/dockerfile:1
# Production image: wheels are built in "build"; the runtime installs only wheels (no compilers).
ARG BASE_IMAGE=python:3.12-slim

# The runtime dependencies, listed apart: the wheels below are rebuilt only when this list
# changes, not on every edit of pyproject.toml.
FROM ${BASE_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write(chr(10).join(deps) + chr(10))"

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY --from=requirements /src/requirements.txt ./
RUN pip wheel --wheel-dir /wheels/deps -r requirements.txt
COPY pyproject.toml ./
# The project; its wheel carries the Alembic migrations (pyproject's force-include).
COPY README.md ./
COPY migrations ./migrations
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels/app .

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# /var/lib/apikeys is the working directory, so the SQLite default has somewhere to write;
# production points APIKEYS_DATABASE_URL at PostgreSQL and writes nothing locally.
RUN groupadd --gid 10001 apikeys \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin apikeys \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/apikeys \
 && python -m venv /opt/venv
COPY --from=build /wheels/deps /tmp/wheels/deps
RUN pip install --no-index --find-links=/tmp/wheels/deps /tmp/wheels/deps/*.whl \
 && rm -rf /tmp/wheels
COPY --from=build /wheels/app /tmp/wheels/app
RUN pip install --no-index --no-deps /tmp/wheels/app/*.whl \
 && rm -rf /tmp/wheels

USER 10001:10001
WORKDIR /var/lib/apikeys
EXPOSE 8000
# Exec form keeps apikeys as PID 1, so SIGTERM reaches uvicorn: it stops accepting connections
# and lets in-flight requests finish (up to 20 s) before exiting 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["apikeys", "serve", "--host", "0.0.0.0", "--port", "8000"]
