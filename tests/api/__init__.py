"""The Flask app under its test client, against a real PostgreSQL database."""
