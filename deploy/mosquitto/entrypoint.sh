#!/bin/sh
# Entry point of the broker container: writes the service accounts ("gateway",
# "cloud") into the password file from the environment, keeps every other entry
# (the devices, added with mosquitto_passwd; docs/operations.md), hands the
# password file and the data directory to the broker's user, then runs the given
# command (mosquitto, which drops root privileges to that user).
# The passwords go to mosquitto_passwd -U through a 0600 file, never through argv.
# (The image's own entry point would chown all of /mosquitto, read-only config too.)
set -eu

passwd_file=${MQTT_PASSWORD_FILE:-/mosquitto/passwd/passwd}
data_dir=${MQTT_DATA_DIR:-/mosquitto/data}
: "${MQTT_GATEWAY_PASSWORD:?is not set (see .env.example)}"
: "${MQTT_CLOUD_PASSWORD:?is not set (see .env.example)}"

umask 077
dir=$(dirname "$passwd_file")
mkdir -p "$dir"
touch "$passwd_file"
accounts=$(mktemp "$dir/.accounts.XXXXXX")
merged=$(mktemp "$dir/.passwd.XXXXXX")
trap 'rm -f "$accounts" "$merged"' EXIT

printf 'gateway:%s\ncloud:%s\n' "$MQTT_GATEWAY_PASSWORD" "$MQTT_CLOUD_PASSWORD" >"$accounts"
mosquitto_passwd -U "$accounts"
grep -v -e '^gateway:' -e '^cloud:' "$passwd_file" >"$merged" || true
cat "$accounts" >>"$merged"
mv "$merged" "$passwd_file"
rm -f "$accounts"
trap - EXIT
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
  chown -R mosquitto:mosquitto "$dir" "$data_dir"
fi

exec "$@"
