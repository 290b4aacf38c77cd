"""`make run`'s script (scripts/serve.sh) gives the console a SECRET_KEY when none is set: made once, readable by
its owner only, and kept, so a signed-in console session survives a restart."""

import os
import signal
import stat
import subprocess
import time
import urllib.request

from tests.support import ROOT, free_port


def _serve(database_url, key_file, port, log):
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY_FILE": str(key_file), "BIND": f"127.0.0.1:{port}"}
    env.pop("SECRET_KEY", None)
    # A process group of its own, as a terminal's Ctrl-C would reach serve.sh, gunicorn and the worker.
    return subprocess.Popen(["scripts/serve.sh"], cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)


def _console_status(port):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/console/", timeout=5) as answer:
                return answer.status
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the console did not answer")


def _stop(process):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def test_serve_makes_a_private_secret_key_once_and_keeps_it(database_url, tmp_path):
    key_file = tmp_path / "data" / "secret_key"
    with open(tmp_path / "serve.log", "ab") as log:
        port = free_port()
        process = _serve(database_url, key_file, port, log)
        try:
            assert _console_status(port) == 200  # not 503: the console has its key
        finally:
            _stop(process)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text()
        assert len(key.strip()) >= 32
        port = free_port()
        process = _serve(database_url, key_file, port, log)
        try:
            assert _console_status(port) == 200
        finally:
            _stop(process)
    assert key_file.read_text() == key
    assert key.strip() not in (tmp_path / "serve.log").read_text()
