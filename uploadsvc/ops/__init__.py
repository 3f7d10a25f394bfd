"""
Running uploadsvc in production: lifecycle events and what listens to them
(metrics, logs, hooks), expiry, shutdown.
"""
