# The Python services of the docker-compose stack: gateways, cloud jobs, the
# simulated fleet. One image, entry point `tillpulse`; the command picks the part.
#
#   docker-compose build          (or: docker build -t tillpulse:local .)
#   docker run --rm tillpulse:local gateway check-config --config /etc/tillpulse/gateway.toml
#
# Two stages: the package and its dependencies are installed into a venv in the
# first, and only that venv is copied into the second, so nothing used to build
# (pip's caches, the source tree, the build backend's temporary files) ships.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tillpulse
COPY . /src
# Non-editable: the venv holds the package itself, not a link to /src.
# cloud = gateway + edge + scikit-learn; sim = the fleet simulator.
RUN /opt/tillpulse/bin/pip install "/src[cloud,sim]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tillpulse" \
      org.opencontainers.image.description="tillpulse gateways, cloud jobs and fleet simulator"
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/tillpulse \
        --shell /usr/sbin/nologin tillpulse \
 && install -d -o tillpulse -g tillpulse -m 0750 \
        /var/lib/tillpulse /var/lib/tillpulse-gateway /var/lib/tillpulse-cloud
COPY --from=build /opt/tillpulse /opt/tillpulse
ENV PATH=/opt/tillpulse/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER tillpulse
WORKDIR /var/lib/tillpulse
ENTRYPOINT ["tillpulse"]
CMD ["--help"]
