"""Flowline's own processes, as `make run` starts them: gunicorn serving the app, `python -m flowline.worker`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.paths import ROOT
from tests.support.urls import free_port

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


class Server:
    """One gunicorn serving Flowline exactly as `make run` does (`gunicorn -c gunicorn.conf.py 'app:create_app()'`),
    with one worker process unless WEB_CONCURRENCY says otherwise (its threads serve requests side by side)."""

    def __init__(self, database_url, tmp_path, env=None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DATABASE_URL": database_url, "WEB_CONCURRENCY": "1", "ACCESS_LOG": "", **(env or {})}
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.log = tmp_path / "gunicorn.log"
        self.process = None

    def start(self, ready=("/readyz", 200)):
        """Start gunicorn and wait until ``ready`` (path, status) answers."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [GUNICORN, "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{self.port}", "app:create_app()"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"gunicorn exited early:\n{self.log.read_text()}"
            try:
                if self.request("GET", ready[0])[0] == ready[1]:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gunicorn did not become ready:\n{self.log.read_text()}")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.log.read_text()

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read()), response.headers
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()), error.headers


class WorkerProcess:
    """One `python -m flowline.worker` process on a database, logging to a file the test can read."""

    def __init__(self, database_url, tmp_path, env):
        self.env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "INFO", **env}
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.log = tmp_path / "worker.log"
        self.process = None

    @property
    def pid(self):
        return self.process.pid

    def start(self, concurrency=1):
        """Start the worker and wait until it listens for work."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flowline.worker", "--concurrency", str(concurrency)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while f"worker {socket.gethostname()}:{self.pid}: " not in self.log.read_text():
            assert self.process.poll() is None, f"the worker exited early:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"the worker did not start:\n{self.log.read_text()}"
            time.sleep(0.05)
        return self

    def signal(self, signum):
        self.process.send_signal(signum)

    def wait(self, timeout=30):
        return self.process.wait(timeout=timeout)
