# Minimal image; the hardened multi-stage image comes with the deployment issue.
#
# bubblewrap needs to create user namespaces inside the container and the service must enter each
# sandbox's network namespace, so run it with (docs/deployment.md; on Kubernetes, helm/sandbox-runtime):
#   docker run --rm -p 8000:8000 --cap-add SYS_ADMIN --cap-add SYS_PTRACE \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --security-opt systempaths=unconfined sandbox-runtime
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY runtime_api runtime_api
COPY bootstrap bootstrap
COPY sandbox sandbox
RUN pip install --no-cache-dir .
COPY template.yaml ./
COPY functions functions

ENV SANDBOX_HOST=0.0.0.0 SANDBOX_PORT=8000
# Functions created through the control plane (kept across containers when this is a named volume).
VOLUME /var/lib/sandbox-runtime
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["sandbox-runtime", "serve", "--template", "/app/template.yaml"]
