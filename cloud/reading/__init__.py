"""Reading InfluxDB: InfluxQL over HTTP, and one detection window's data."""
