"""Edge agent for Raspberry Pi terminals: serial devices -> durable outbox -> MQTT."""
