"""Flowline: stores workflows of text-processing nodes in PostgreSQL and runs them with full history."""
