#!/bin/bash
# InfluxDB 2.7 init script (/docker-entrypoint-initdb.d; runs once, right after
# the setup that DOCKER_INFLUXDB_INIT_* describes, on an empty data volume).
#
# The cloud jobs and Grafana read with InfluxQL over /query, which 2.x answers
# through a DBRP mapping: database "<bucket>", retention policy "autogen" -> the
# bucket. 2.7 would also map a bucket of that name implicitly; the explicit,
# default mapping keeps the stack independent of that.
set -euo pipefail

influx v1 dbrp create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
  --rp autogen \
  --default
