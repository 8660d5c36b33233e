"""tillpulse's wire contract: topics, messages, serial framing and line protocol.

Every other package imports its contract from here; nothing is defined twice.
"""
