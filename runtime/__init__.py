"""The shared runtime under every deployable: config sections and secrets, logs,
backoff, one MQTT link, one durable atomic writer, dead letters, state files
and the InfluxDB line sinks. It imports `wire` and nothing of ours above it."""
