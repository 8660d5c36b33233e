#!/bin/sh
# Preflight of the docker-compose stack (service "preflight"; every other service starts
# only once it has exited 0). It refuses what would start the stack insecurely:
# - a secret that is empty, still the example's ("change-me"), shorter than
#   MIN_LENGTH, or equal to another secret (one leaked secret must not open the rest);
# - plaintext published beyond the host's loopback: the MQTT listener 1883 (passwords
#   in clear on the wire: devices from the network use TLS on 8883) unless
#   MQTT_ALLOW_PLAINTEXT=yes-i-know, and Grafana over HTTP unless it serves HTTPS
#   (GRAFANA_PROTOCOL=https) or GRAFANA_ALLOW_PLAINTEXT=yes-i-know;
# - TLS asked for but its files missing, which would otherwise start without TLS.
# One line per problem on stderr, naming the variable and the fix; exit 1 if any.
#
# The values come from the environment, as docker-compose.yml passes them from .env;
# the TLS directories are mounted at $PREFLIGHT_TLS_ROOT/mqtt and .../grafana.
# POSIX sh: it runs with the busybox sh of the eclipse-mosquitto image.
set -u

# 16 for every secret, the InfluxDB admin password included (InfluxDB's own floor is
# 8): `openssl rand -hex 24` gives 48.
MIN_LENGTH=16
SECRETS="MQTT_GW1_PASSWORD MQTT_GW2_PASSWORD MQTT_CLOUD_PASSWORD MQTT_HEALTH_PASSWORD
INFLUX_ADMIN_PASSWORD INFLUX_TOKEN GRAFANA_ADMIN_PASSWORD"
GENERATE="openssl rand -hex 24"
OPT_IN=yes-i-know
tls_root=${PREFLIGHT_TLS_ROOT:-/tls}
problems=0

problem() {
  printf 'preflight: %s\n' "$1" >&2
  problems=$((problems + 1))
}

value_of() {
  printenv "$1" || true
}

is_loopback() {
  case "$1" in
    127.* | ::1 | "[::1]") return 0 ;;
    *) return 1 ;;
  esac
}

# missing_files DIR FILE...: the FILEs not in DIR, space separated
missing_files() {
  dir=$1
  shift
  missing=
  for file in "$@"; do
    [ -f "$dir/$file" ] || missing="$missing $file"
  done
  printf '%s' "${missing# }"
}

# --- secrets ---------------------------------------------------------------------------
for name in $SECRETS; do
  value=$(value_of "$name")
  case "$value" in
    "") problem "$name is empty: set it in .env to the output of: $GENERATE" ;;
    *change-me*) problem "$name is still the example value of .env.example: replace it in .env with the output of: $GENERATE" ;;
    *)
      if [ "${#value}" -lt "$MIN_LENGTH" ]; then
        problem "$name has ${#value} characters, fewer than $MIN_LENGTH: replace it in .env with the output of: $GENERATE"
      fi
      ;;
  esac
done

seen=
for name in $SECRETS; do
  value=$(value_of "$name")
  [ -n "$value" ] || continue
  for earlier in $seen; do
    if [ "$(value_of "$earlier")" = "$value" ]; then
      problem "$name is the same as $earlier: give each its own value in .env, the output of: $GENERATE"
      break
    fi
  done
  seen="$seen $name"
done

# --- plaintext beyond the loopback -----------------------------------------------------
mqtt_bind=$(value_of MQTT_BIND)
if ! is_loopback "$mqtt_bind" && [ "$(value_of MQTT_ALLOW_PLAINTEXT)" != "$OPT_IN" ]; then
  problem "MQTT_BIND=$mqtt_bind publishes plaintext MQTT (1883: passwords readable on the wire) beyond this host: set MQTT_BIND=127.0.0.1 and connect devices over TLS on 8883 (MQTT_TLS_DIR), or set MQTT_ALLOW_PLAINTEXT=$OPT_IN if that network is trusted"
fi

grafana_bind=$(value_of GRAFANA_BIND)
grafana_protocol=$(value_of GRAFANA_PROTOCOL)
case "$grafana_protocol" in
  http)
    if ! is_loopback "$grafana_bind" && [ "$(value_of GRAFANA_ALLOW_PLAINTEXT)" != "$OPT_IN" ]; then
      problem "GRAFANA_BIND=$grafana_bind publishes Grafana over plain HTTP (its passwords readable on the wire) beyond this host: set GRAFANA_PROTOCOL=https with server.crt and server.key in GRAFANA_TLS_DIR, or GRAFANA_BIND=127.0.0.1 behind a TLS proxy, or GRAFANA_ALLOW_PLAINTEXT=$OPT_IN if that network is trusted"
    fi
    ;;
  https)
    missing=$(missing_files "$tls_root/grafana" server.crt server.key)
    if [ -n "$missing" ]; then
      problem "GRAFANA_PROTOCOL=https needs server.crt and server.key in GRAFANA_TLS_DIR ($(value_of GRAFANA_TLS_DIR)), missing: $missing"
    fi
    ;;
  *) problem "GRAFANA_PROTOCOL=$grafana_protocol: set it to http or https" ;;
esac

# --- TLS asked for ----------------------------------------------------------------------
# The broker opens its TLS listener 8883 only when all three files are there: an
# MQTT_TLS_DIR without them would start the broker without it, silently.
mqtt_tls_dir=$(value_of MQTT_TLS_DIR)
if [ -n "$mqtt_tls_dir" ]; then
  missing=$(missing_files "$tls_root/mqtt" server.crt server.key ca.crt)
  if [ -n "$missing" ]; then
    problem "MQTT_TLS_DIR=$mqtt_tls_dir needs server.crt, server.key and ca.crt for the TLS listener 8883, missing: $missing"
  fi
fi

if [ "$problems" -gt 0 ]; then
  printf 'preflight: %s problem(s) in .env: the stack does not start until they are fixed\n' \
    "$problems" >&2
  exit 1
fi
echo "preflight: .env passes (secrets, published ports, TLS files)"
