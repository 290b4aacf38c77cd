"""End to end: real gunicorn, real workers, throwaway PostgreSQL clusters, a real browser."""
