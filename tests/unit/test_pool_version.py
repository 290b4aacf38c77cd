"""flowline/data/db.py's Pool reaches into psycopg_pool where it has no public API: a new release is re-checked."""

from importlib.metadata import version

from flowline.data import db


def test_the_pool_was_checked_against_the_installed_psycopg_pool():
    installed = version("psycopg-pool")
    assert installed == db.PSYCOPG_POOL_CHECKED, (
        f"psycopg-pool is {installed}, but flowline/data/db.py's Pool was checked against "
        f"{db.PSYCOPG_POOL_CHECKED}. Re-check, in the new psycopg_pool/pool.py, that Pool._probe's private "
        "ConnectionPool._lock, _nconns, _connect and _add_to_pool still count and add a connection as the pool's "
        "own growth does (or that a public way now exists), that _connect still calls the configure callback and "
        "counts get_stats()['connections_errors'], and whether psycopg_pool's own max_waiting still keeps the "
        "waiters that timed out (Pool's docstring); run tests/api/test_failures.py, test_availability.py and "
        "test_concurrency.py; then set PSYCOPG_POOL_CHECKED."
    )
