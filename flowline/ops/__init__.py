"""What operators and their tools read: the probes (/livez, /readyz) and the metrics' exposition (/metrics, a
worker's own endpoint, the request instrumentation)."""
