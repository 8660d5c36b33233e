"""Cloud jobs: anomaly detection on InfluxDB, alerts, evaluation against ground truth."""
