# Two stages: the first builds wheels (the gateway with its compiled core, and every dependency),
# the second installs only those wheels into a slim image with no compiler.
#
#   docker build -t store-gateway .
#   docker run -v /srv/gateway:/var/lib/gateway -v /srv/gateway/gateway.toml:/etc/gateway/gateway.toml:ro \
#       -p 8600:8600 -p 8700:8700 -p 9600:9600 store-gateway
#
# The configuration must listen on 0.0.0.0 to be reachable from outside the container and keep its
# data and keys under /var/lib/gateway (see docs/operations.md).

FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the wheel is made of: no virtualenv, data or keys from the build context.
COPY pyproject.toml setup.py README.md ./
COPY core_ext ./core_ext
COPY device_plugins ./device_plugins
COPY gateway ./gateway
COPY upstream ./upstream
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && ls /wheels/store_gateway-*.whl

FROM python:3.11-slim
# tzdata: store time zones (zoneinfo) must resolve whatever the base image ships.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/gateway --uid 10001 --shell /usr/sbin/nologin gateway \
    && mkdir -p /etc/gateway \
    && chown gateway:gateway /var/lib/gateway
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links=/tmp/wheels store-gateway \
    && rm -rf /tmp/wheels
# A build without the compiled core must fail at start, not run slowly on the pure-Python twins.
ENV GATEWAY_REQUIRE_EXTENSIONS=1 \
    PYTHONUNBUFFERED=1
USER gateway
WORKDIR /var/lib/gateway
VOLUME ["/var/lib/gateway"]
EXPOSE 8600 8700 9600
STOPSIGNAL SIGTERM
# Assumes metrics.listen on port 9600 (as in the example); change it with the configuration.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9600/healthz', timeout=4)"]
ENTRYPOINT ["gateway"]
CMD ["run", "--config", "/etc/gateway/gateway.toml"]
