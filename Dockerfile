# istiolite as istiod: `docker build -t istiolite:dev .`
# The build stage makes wheels (istiolite with its generated protos, and every locked
# dependency); the runtime stage installs them into a venv on a slim Python, with no compiler,
# no pip cache and no build tools, and runs as a named non-root user (uid 1337, which the
# Deployment's runAsUser repeats so that the kubelet can check runAsNonRoot).
# Envoy is not in the image: the proxies are the sidecars' own.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY protos/ protos/
COPY istiolite/ istiolite/
COPY docker/build-wheels.sh docker/
RUN docker/build-wheels.sh /wheels /opt/build-venv

FROM python:3.11-slim-bookworm
# iptables: `istiolite iptables`, the envoy injection flavour's istio-init (run as root there).
# Debian's current package (security updates), not a pinned version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 1337 istiolite \
    && useradd --system --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin istiolite
COPY --from=build /wheels /tmp/wheels
RUN python -m venv /opt/istiolite \
    && /opt/istiolite/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels istiolite \
    && rm -rf /tmp/wheels
ENV PATH=/opt/istiolite/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A name, as asked of images; the Deployment gives the number (1337) for runAsNonRoot.
# hadolint ignore=DL3066
USER istiolite
# 15010 xDS, 15012 xDS + CA (TLS), 15014 metrics, 15017 webhooks (TLS), 8080 ready + debug
EXPOSE 15010 15012 15014 15017 8080
ENTRYPOINT ["istiolite"]
CMD ["serve"]
