# sandbox-runtime: the service, bubblewrap and the bundled template.yaml. The dependencies, the project
# and the runtime are built in separate stages; the runtime stage gets no compiler and no pip.
#
# The service must run as root in its container, with a few privileges Docker withholds by default;
# run it exactly as docs/deployment.md#in-a-container says (each flag is explained there):
#
#   docker run -d --name sandbox-runtime -p 8000:8000 --stop-timeout 45 \
#     --cgroupns private --cap-drop ALL \
#     --cap-add SYS_ADMIN --cap-add SYS_PTRACE --cap-add SETUID --cap-add SETGID \
#     --cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add FOWNER --cap-add KILL \
#     --security-opt seccomp=docker-seccomp.json --security-opt systempaths=unconfined \
#     --security-opt no-new-privileges sandbox-runtime
#
# On Kubernetes, the Helm chart in helm/sandbox-runtime runs it (docs/deployment.md#kubernetes).
#
# BASE is any Debian bookworm image with Python 3.11 as `python3` (venv included): requirements.lock
# is resolved for CPython 3.11 on Linux. Pin it by digest for reproducible builds, e.g.
# --build-arg BASE=python:3.11-slim-bookworm@sha256:<digest>. Without a registry, scripts/image
# --local-base builds on a base made from the Debian mirror (scripts/local-base).
ARG BASE=python:3.11-slim-bookworm

# ---- deps: the locked dependencies in a virtual environment -------------------------------------
FROM ${BASE} AS deps
RUN python3 -m venv /opt/sandbox-runtime
COPY requirements.lock /tmp/requirements.lock
# Binary wheels only, each checked against its hash: nothing is compiled, so no compiler is needed.
RUN /opt/sandbox-runtime/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes \
        --only-binary :all: --no-deps -r /tmp/requirements.lock \
    # The test suites some packages ship (47 MB, most of it sympy's): never imported.
    && find /opt/sandbox-runtime/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +

# ---- build: the project itself, built with the locked setuptools, into a prefix of its own -------
FROM deps AS build
COPY pyproject.toml README.md /src/
COPY runtime_api /src/runtime_api
COPY bootstrap /src/bootstrap
COPY sandbox /src/sandbox
COPY sandbox_runtime /src/sandbox_runtime
RUN /opt/sandbox-runtime/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
        --no-build-isolation --prefix /opt/project /src

# ---- venv: the environment the image runs, without pip and setuptools ----------------------------
FROM deps AS venv
RUN /opt/sandbox-runtime/bin/pip uninstall --yes --quiet pip setuptools

# ---- runtime: the base, bubblewrap and libseccomp from Debian, and the environment -------------
FROM ${BASE}
# bookworm's bubblewrap 0.8.0 (the sandbox needs 0.8+ for --disable-userns). A pin the mirror no
# longer carries fails the build: pass the version it has with --build-arg BUBBLEWRAP_VERSION=.
ARG BUBBLEWRAP_VERSION=0.8.0-2+deb12u1
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "bubblewrap=${BUBBLEWRAP_VERSION}" libseccomp2 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log
# Dependencies and project in separate layers: a change to the code rebuilds a few hundred KB only.
# (python3.11: requirements.lock is resolved for it.)
COPY --from=venv /opt/sandbox-runtime /opt/sandbox-runtime
COPY --from=build /opt/project/lib/python3.11/site-packages/ /opt/sandbox-runtime/lib/python3.11/site-packages/
COPY --from=build /opt/project/bin/sandbox-runtime /opt/sandbox-runtime/bin/sandbox-runtime
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# The bundled example: the template and its code, where the Helm chart mounts a template too.
WORKDIR /app
COPY template.yaml template.yaml
COPY functions functions

LABEL org.opencontainers.image.title="sandbox-runtime" \
      org.opencontainers.image.description="AWS Lambda handlers, each in its own bubblewrap sandbox, behind the Lambda Invoke and Runtime APIs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/sandbox-runtime/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SANDBOX_HOST=0.0.0.0 \
    SANDBOX_PORT=8000
# Functions created through the control plane; a named volume keeps them across containers.
VOLUME /var/lib/sandbox-runtime
EXPOSE 8000
# /health answers once the service serves; `docker stop` then sends SIGTERM to the service itself
# (pid 1), which drains in-flight invokes for up to SANDBOX_SHUTDOWN_TIMEOUT (30 s) and stops the
# sandboxes: give it --stop-timeout 45 (Docker's default is 10 s before SIGKILL).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SANDBOX_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["sandbox-runtime", "serve", "--template", "/app/template.yaml"]
