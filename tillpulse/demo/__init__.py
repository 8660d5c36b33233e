"""`tillpulse demo`: a simulated fleet through the whole local pipeline (docs: its cli)."""
