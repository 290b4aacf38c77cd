"""One blueprint per resource; ``app.create_app`` registers them all."""
