"""The detectors: health rules, payment KPIs, fraud, fleet-wide rules and the state they carry."""
