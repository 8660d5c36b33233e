"""Gateway: MQTT -> validate -> dedup -> aggregate -> durable spool -> InfluxDB."""
