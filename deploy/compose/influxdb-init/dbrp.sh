#!/bin/bash
# Run once by the influxdb image after its first setup: map the bucket to database "lingtan"
# (retention policy autogen) for InfluxQL on the v1 query API, which Grafana uses. Recent 2.x
# releases also create such a mapping on their own; an explicit one does no harm.
set -euo pipefail
influx v1 dbrp create \
    --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
    --rp autogen \
    --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
    --default
