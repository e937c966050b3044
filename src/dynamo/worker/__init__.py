"""The generic worker: wraps one engine, registers it, serves it, publishes its events."""
