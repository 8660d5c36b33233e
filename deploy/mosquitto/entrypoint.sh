#!/bin/sh
# Entry point of the broker container. Before it runs the given command (mosquitto,
# which drops root privileges to the user "mosquitto"), it
# - writes the service accounts from the environment: every name in
#   MQTT_SERVICE_ACCOUNTS (the gateways, the cloud jobs) with the password in
#   MQTT_<NAME>_PASSWORD (upper case, "-" as "_") into the device listener's password
#   file, keeping every other entry (the agents' accounts, which `tillpulse broker
#   provision` writes; docs/operations.md), and the healthcheck's account "health"
#   (MQTT_HEALTH_PASSWORD) into the health listener's own password file;
# - seeds the device listener's ACL (the volume, next to the password file, where
#   provision rewrites it) with the service accounts' grants (acl, next to this
#   script) when there is none yet, so a new stack runs before its first provision;
# - gives the healthcheck's mosquitto_sub that account in its own config file,
#   $XDG_CONFIG_HOME/mosquitto_sub, so that no password is on a command line;
# - opens the TLS listener (tls-listener.conf, next to this script) only when the
#   certificates dir has server.crt, server.key and ca.crt;
# - hands the password files, the ACL, the included listener and the data directory to
#   the broker's user (it re-reads them on SIGHUP).
# The passwords go to mosquitto_passwd -U through 0600 files, never through argv.
# (The image's own entry point would chown all of /mosquitto, read-only config too.)
set -eu

passwd_dir=${MQTT_PASSWD_DIR:-/mosquitto/passwd}
data_dir=${MQTT_DATA_DIR:-/mosquitto/data}
include_dir=${MQTT_INCLUDE_DIR:-/mosquitto/conf.d}
certs_dir=${MQTT_CERTS_DIR:-/mosquitto/certs}
: "${MQTT_SERVICE_ACCOUNTS:?is not set (docker-compose.yml)}"
: "${XDG_CONFIG_HOME:?is not set (docker-compose.yml: the healthcheck client config)}"

umask 077
mkdir -p "$passwd_dir" "$data_dir" "$include_dir" "$XDG_CONFIG_HOME"
scratch=$(mktemp -d "$passwd_dir/.entrypoint.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# password_of NAME: MQTT_<NAME>_PASSWORD, which must be set, without blanks (the
# healthcheck's client config separates words by them).
password_of() {
  variable="MQTT_$(printf '%s' "$1" | tr 'a-z-' 'A-Z_')_PASSWORD"
  value=$(printenv "$variable") || value=
  case "$value" in
    "" | *[[:space:]]*)
      echo "entrypoint.sh: $variable must be set, without blanks (see .env.example)" >&2
      return 1
      ;;
  esac
  printf '%s' "$value"
}

# write_accounts FILE NAME...: (re)writes these accounts into the password file FILE
# and keeps its other entries.
write_accounts() {
  file=$1
  shift
  : >"$scratch/accounts"
  for name in "$@"; do
    case "$name" in
      *[!A-Za-z0-9_-]*)
        echo "entrypoint.sh: not an account name: $name" >&2
        return 1
        ;;
    esac
    password=$(password_of "$name")
    printf '%s:%s\n' "$name" "$password" >>"$scratch/accounts"
  done
  mosquitto_passwd -U "$scratch/accounts"
  touch "$file"
  awk -F: 'NR == FNR { ours[$1] = 1; next } !($1 in ours)' \
    "$scratch/accounts" "$file" >"$scratch/merged"
  cat "$scratch/accounts" >>"$scratch/merged"
  mv "$scratch/merged" "$file"
}

# shellcheck disable=SC2086 # MQTT_SERVICE_ACCOUNTS is a list of names
write_accounts "$passwd_dir/passwd" $MQTT_SERVICE_ACCOUNTS
write_accounts "$passwd_dir/health" health
health_password=$(password_of health)
printf -- '-u health\n-P %s\n' "$health_password" >"$XDG_CONFIG_HOME/mosquitto_sub"

if [ ! -e "$passwd_dir/acl" ]; then
  cp "$(dirname "$0")/acl" "$passwd_dir/acl"
fi

rm -f "$include_dir"/*.conf
if [ -f "$certs_dir/server.crt" ] && [ -f "$certs_dir/server.key" ] && [ -f "$certs_dir/ca.crt" ]; then
  cp "$(dirname "$0")/tls-listener.conf" "$include_dir/"
fi
chmod -R go+rX "$include_dir"  # no secrets: readable by the broker after SIGHUP

if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
  chown -R mosquitto:mosquitto "$passwd_dir" "$data_dir"
fi

rm -rf "$scratch"
trap - EXIT
exec "$@"
