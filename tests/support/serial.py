"""Tests that must run alone under pytest-xdist: those that time what they measure (a latency, a bounded wait, a
median, an extraction against its time bound) and would count another process's load as Flowline's slowness.
They are marked ``@pytest.mark.serial``; conftest.py sends them all to one xdist worker (their group: see
tests/support/grouping.py), and every test takes its turn through this run's lock: a serial test holds it alone, any other test shares
it. So while a serial test runs, no other test does anywhere.
"""

import fcntl
from pathlib import Path


class Turns:
    """This process's turns at the lock kept in ``folder`` (made once for the run, named to every xdist worker)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._files = None
        self.alone = False

    def take(self, alone):
        """Wait for a turn: alone (no other test runs) or shared with other tests. Holding the turn alone already,
        a test that would run alone goes on at once: a run of serial tests waits for the others to stop once.

        A test waiting to run alone goes next: it holds the gate, which every test passes through, so no new test
        gets in while it waits and the other processes' tests cannot starve it."""
        if self._files is not None:
            if alone and self.alone:
                return
            self.release()
        gate, room = open(self.folder / "gate", "a"), open(self.folder / "room", "a")  # noqa: SIM115 -- kept open while the turn is held, closed by release()
        self._files, self.alone = (gate, room), alone
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)

    def release(self):
        """Give the turn back (closing the files lets go of their locks)."""
        if self._files is not None:
            for file in self._files:
                file.close()
            self._files = None
