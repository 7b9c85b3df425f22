# One image for the four services (users, events, reservations, gateway): the service is chosen by the command
# (`python -m services.<name>.main`, as docker-compose.yml and deploy/k8s do) or, when no command is given, by the
# SERVICE build argument / EVENTFLOW_SERVICE variable.
#
#   docker build -t eventflow/app .                                     # official Python image, PyPI
#   docker build --build-arg BASE_IMAGE=eventflow/debian-python:bookworm -t eventflow/app .   # offline: see
#       docs/operations.md (a Debian base from debootstrap, wheels from deploy/wheelhouse)
#
# Secrets are never part of the image: they come from the environment or from EVENTFLOW_ENV_FILE at start.
ARG BASE_IMAGE=python:3.11-slim

# -- dependencies, built into a virtualenv that the runtime stage copies (no pip, no wheels in the final image) --
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
COPY pyproject.toml /build/pyproject.toml
COPY deploy/wheelhouse /wheelhouse
# Only pyproject.toml decides this layer: code changes do not reinstall the dependencies. With wheels in
# deploy/wheelhouse the install is offline (--no-index); without, it uses the package index.
RUN python3 -m venv /opt/eventflow \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/build/pyproject.toml', 'rb'))['project']['dependencies']))" > /build/requirements.txt \
    && if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
         /opt/eventflow/bin/pip install --no-index --find-links /wheelhouse -r /build/requirements.txt; \
       else \
         /opt/eventflow/bin/pip install -r /build/requirements.txt; \
       fi \
    && { /opt/eventflow/bin/pip uninstall -y -q pip setuptools || true; }

# -- runtime ------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG SERVICE=gateway
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app PATH=/opt/eventflow/bin:$PATH \
    EVENTFLOW_SERVICE=${SERVICE}
COPY --from=deps /opt/eventflow /opt/eventflow
WORKDIR /app
# The shared package and the services (one image for all four keeps one build and one cache; services still
# talk only over HTTP and NATS). Nothing else: no tests, no deploy files, no local state (.dockerignore).
COPY eventflow ./eventflow
COPY services ./services
COPY deploy/docker/entrypoint.sh /usr/local/bin/eventflow-entrypoint
RUN python3 -m compileall -q /app/eventflow /app/services \
    && (getent passwd 10001 >/dev/null || useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin eventflow)
USER 10001
EXPOSE 8001 8002 8003 8080
ENTRYPOINT ["eventflow-entrypoint"]
