"""tillpulse: edge-to-cloud telemetry for payment terminal fleets."""
