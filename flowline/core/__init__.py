"""What every layer uses: settings (config), log formats and context (logs), the metric series (metrics), the run,
step and delivery statuses (statuses) and the text fields PostgreSQL can store (fields). Imports nothing else of
Flowline's."""
