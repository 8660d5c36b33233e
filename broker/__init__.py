"""Broker accounts: the device registry, and the Mosquitto password file and ACL made from it."""
