"""Firmware simulator: POS terminal and sensor fleets with injected faults and ground truth."""
