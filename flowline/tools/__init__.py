"""Commands for operators: export and import (the versioned JSON file: export_format, checksums, export,
importer), prune-runs (prune), and their click commands (cli)."""
