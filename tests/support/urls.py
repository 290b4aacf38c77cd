"""Database URLs and free TCP ports."""

import socket
from urllib.parse import urlsplit, urlunsplit


def url_for_database(url, dbname):
    """Return the URL ``url`` pointing at database ``dbname`` on the same server (a URL, as DATABASE_URL is)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
