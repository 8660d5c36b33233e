"""Test harness: real servers run as child processes, MQTT collectors, message
factories and stored-fleet loaders. Used by tests, bench and `tillpulse demo`;
product code (wire, runtime, the deployables) never imports it."""
