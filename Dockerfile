# One image for both programs: `portside run` (the reconciler Deployment) and `portside speaker`
# (the per-node DaemonSet). Build:
#
#   podman build -t portside .            # or: docker build -t portside .
#   podman build --build-arg BASE_IMAGE=registry.example/python:3.11-slim-bookworm -t portside .
#
# Behind a TLS-intercepting proxy, hand pip your CA bundle as a build secret (it never lands in a
# layer): --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt
#
# BASE_IMAGE must be a Debian-based image with python3 (>= 3.11) and python3-venv; both stages use
# it, so the virtualenv's interpreter symlinks stay valid in the final image.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/portside
# Dependencies first, from pyproject.toml alone, so editing the code does not re-download them.
COPY pyproject.toml /src/
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/portside/bin/pip install --requirement /tmp/requirements.txt
COPY README.md /src/
COPY reconciler /src/reconciler
# --no-deps: the step above installed them; this adds only portside itself (not editable). pip has
# already byte-compiled everything (the root filesystem is read-only at run time, so it must be).
# kubernetes/aio is an asyncio copy of the whole client (~70 MB) that portside never imports; the
# image test imports every reconciler module inside the image, so a future use of it fails there.
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && /opt/portside/bin/pip install --no-deps /src \
    && /opt/portside/bin/pip uninstall --yes pip setuptools \
    && rm -rf /opt/portside/lib/python3*/site-packages/kubernetes/aio

FROM ${BASE_IMAGE}
# git: the source module drives the git binary (GitPython); openssh-client for ssh:// remotes and
# SSH-signed commits (ssh-keygen), gpg for GPG-signed ones (--verify-signatures). tini as PID 1
# reaps the git children and passes signals on.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends git openssh-client gpg ca-certificates tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 portside \
    && useradd --uid 65532 --gid 65532 --home-dir /home/portside --create-home \
        --shell /usr/sbin/nologin portside
COPY --from=build /opt/portside /opt/portside
ENV PATH=/opt/portside/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Non-root by default; the speaker DaemonSet alone overrides this (see deploy/speaker.yaml).
USER 65532:65532
WORKDIR /home/portside
ENTRYPOINT ["/usr/bin/tini", "--", "portside"]
CMD ["--help"]
LABEL org.opencontainers.image.title="portside" \
      org.opencontainers.image.description="Expose bare-metal Kubernetes services on your network and the Internet, declaratively, from Git." \
      org.opencontainers.image.licenses="Apache-2.0"
