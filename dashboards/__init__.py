"""Grafana dashboards, datasources and alert rules as code."""
