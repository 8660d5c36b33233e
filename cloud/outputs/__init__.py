"""Where alerts go: InfluxDB anomaly points, MQTT alert topics, a webhook.

`fanout.AlertOutputs` gives every alert to each configured output:
`anomaly_points.AnomalyWriter` (InfluxDB), `mqtt_alerts.AlertPublisher` (MQTT,
over the shared `runtime.mqtt_link.MqttLink`) and `webhook.WebhookNotifier`;
`delivery` holds what they all report (`OutputStats`, `OutputError`).
"""
