"""Helpers the tests import by name (conftest.py holds only fixtures): ``from tests.support import make_pdf, wait_for``.

Besides what is re-exported here: tests.support.fake_llm (a local OpenAI-compatible server), tests.support.hostile_pdf
(a PDF slow to extract) and tests/support/front_end.html (the stand-in front end the browser tests serve).
"""

# The JSON API's routes, for the tests that walk every route: the rules the OpenAPI document covers.
from flowline.api.openapi import api_rules
from tests.support.browser import CHROMIUM, launch_chromium
from tests.support.clusters import PGBIN, cluster_url, streaming_replica, throwaway_cluster
from tests.support.paths import ROOT, SUPPORT
from tests.support.pdf import make_pdf
from tests.support.processes import GUNICORN, Server, WorkerProcess
from tests.support.urls import free_port, url_for_database
from tests.support.waiting import wait_for

__all__ = [
    "CHROMIUM",
    "GUNICORN",
    "PGBIN",
    "ROOT",
    "SUPPORT",
    "Server",
    "WorkerProcess",
    "api_rules",
    "cluster_url",
    "free_port",
    "launch_chromium",
    "make_pdf",
    "streaming_replica",
    "throwaway_cluster",
    "url_for_database",
    "wait_for",
]
