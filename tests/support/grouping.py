"""How pytest-xdist hands the tests out: a test of a group (conftest.py names them: the serial tests, and the tests
of a module with a module-scoped fixture) goes to the same worker as the rest of its group, in one piece; any other
test goes alone to whichever worker is free.

xdist's own ``--dist loadgroup`` cannot do it under the pinned pytest 9.2.0: it marks a group by appending it to the
item's ``_nodeid``, which pytest 9 no longer reads (a node's id is now ``_id``), so every test went alone
(pytest-dev/pytest-xdist#1386, open; re-check when either pin moves). Instead, each xdist worker writes the groups
it collected to a file, and this scheduler, in the controller, reads them.
"""

import json
import os
from pathlib import Path

from xdist.scheduler import LoadScopeScheduling


def write_groups(folder: Path, groups):
    """Write ``groups`` ({test id: group name}) for the scheduler; every worker writes the same, atomically."""
    partial = folder / f"groups.{os.getpid()}"
    partial.write_text(json.dumps(groups))
    os.replace(partial, folder / "groups.json")


class GroupScheduling(LoadScopeScheduling):
    """``--dist loadscope`` with the groups of ``folder``/groups.json as its scopes (a test of no group is a scope
    of its own); the largest groups are handed out first."""

    def __init__(self, config, log, folder: Path):
        super().__init__(config, log)
        self._file = folder / "groups.json"
        self._groups = None

    def _split_scope(self, nodeid):
        if self._groups is None:
            self._groups = json.loads(self._file.read_text())
        return self._groups.get(nodeid, nodeid)
