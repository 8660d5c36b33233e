"""The cloud jobs: a detection cycle, alert bookkeeping, scheduling and training."""
