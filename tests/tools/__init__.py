"""The command-line tools: migrations, export/import (flowline.tools), prune-runs, the database roles script."""
