#!/bin/bash
# InfluxDB 2.7 init script (/docker-entrypoint-initdb.d; runs once, right after
# the setup that DOCKER_INFLUXDB_INIT_* describes, on an empty data volume).
#
# The cloud jobs and Grafana read with InfluxQL over /query, which 2.x answers
# through a DBRP mapping: database "<bucket>", retention policy "autogen" -> the
# bucket. 2.7 would also map a bucket of that name implicitly; the explicit,
# default mapping keeps the stack independent of that.
set -euo pipefail

# map_database BUCKET_ID NAME: database NAME, retention policy autogen -> that bucket
map_database() {
  influx v1 dbrp create \
    --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    --bucket-id "$1" \
    --db "$2" \
    --rp autogen \
    --default
}

# The real terminals' bucket, made by the setup.
map_database "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" "${DOCKER_INFLUXDB_INIT_BUCKET}"

# The simulated fleet's (compose profile "sim"), with the same retention. Made here
# whether the profile runs or not: this script runs only once, on an empty volume, and
# the profile may be switched on later. The bucket's id is the first column of the
# table `bucket create` prints.
sim_bucket_id=$(
  influx bucket create \
    --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    --name "${TILLPULSE_SIM_BUCKET}" \
    --retention "${DOCKER_INFLUXDB_INIT_RETENTION}" \
    --hide-headers | awk 'NR == 1 { print $1 }'
)
map_database "${sim_bucket_id:?influx bucket create printed no bucket id}" "${TILLPULSE_SIM_BUCKET}"
