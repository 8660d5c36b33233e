"""Where alerts go: InfluxDB anomaly points, MQTT alert topics, a webhook."""
