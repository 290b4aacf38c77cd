"""Pure Python: no database, no server; `pytest tests/unit` runs in seconds."""
