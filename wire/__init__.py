"""tillpulse's wire contract: topics, messages, serial framing, line protocol, the
card-number guard, timestamps, ground-truth labels and the incident vocabulary.

Every other package imports its contract from here: none defines a message, a
topic, a frame format, a line-protocol encoder or a card-number rule of its own.
One thing is spelt out again outside these modules' code: the InfluxQL queries
of ``cloud`` and ``dashboards`` name measurements and fields as text (their tests
run them against a real InfluxDB holding what ``wire.points`` wrote).
"""
