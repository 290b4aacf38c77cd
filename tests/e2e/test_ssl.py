"""DATABASE_URL with sslmode and sslrootcert, against a throwaway PostgreSQL that only takes TLS connections on
TCP, with a certificate for localhost and 127.0.0.1 signed by a throwaway CA (made here with the openssl CLI)."""

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from flowline.core.config import mask_url
from flowline.data import migrations
from tests.support import free_port, throwaway_cluster, wait_for

PASSWORD = "Flowline-tls-s3cret-4711"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder, name):
    """Write ``<name>.crt`` and ``<name>.key``: a self-signed CA."""
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-subj",
        f"/CN=Flowline test {name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )
    return folder / f"{name}.crt"


def make_server_cert(folder, ca):
    """Write ``server.crt`` and ``server.key`` for localhost and 127.0.0.1, signed by CA ``ca``."""
    (folder / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=folder,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        cwd=folder,
    )


class TlsCluster:
    def __init__(self, home, port, certs):
        self.home, self.port, self.certs = home, port, certs
        self.root_cert = certs / "ca.crt"
        self.other_root_cert = certs / "other-ca.crt"

    def admin(self, dbname="postgres"):
        """A connection over the cluster's unix socket (trust: no TLS, no password)."""
        return psycopg.connect(f"postgresql://postgres@/{dbname}?host={self.home}&port={self.port}", autocommit=True)

    def url(self, dbname, sslmode="verify-full", host="localhost", root_cert="ca", extra=""):
        """A TCP URL with the password, ``sslmode`` and, unless ``root_cert`` is None, ``sslrootcert``."""
        url = f"postgresql://postgres:{PASSWORD}@{host}:{self.port}/{dbname}?sslmode={sslmode}{extra}"
        if root_cert is not None:
            url += f"&sslrootcert={root_cert if isinstance(root_cert, Path) else self.certs / f'{root_cert}.crt'}"
        return url

    def create_database(self, template=None):
        name = f"flowline_tls_{uuid.uuid4().hex[:10]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates (Debian: apt-get install openssl)")
    certs = tmp_path_factory.mktemp("certs")
    make_ca(certs, "ca")
    make_ca(certs, "other-ca")
    make_server_cert(certs, "ca")
    port = free_port()

    def configure(data):
        shutil.copy(certs / "server.crt", data / "server.crt")
        shutil.copy(certs / "server.key", data / "server.key")
        (data / "server.key").chmod(0o600)
        # TCP takes TLS with a password only; the unix socket (the test's admin connection) trusts.
        (data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhost all all all reject\n"
        )

    options = f"-c ssl=on -c listen_addresses=127.0.0.1 -p {port}"
    with throwaway_cluster("flowline-tls-", options, configure) as (home, _):
        cluster = TlsCluster(home, port, certs)
        with cluster.admin() as conn:
            conn.execute(f"ALTER ROLE postgres PASSWORD '{PASSWORD}'")
        # One migrated database, applied over TLS, that each test copies.
        template = cluster.create_database()
        migrations.apply(cluster.url(template))
        cluster.template = template
        yield cluster


def ssl_of_app_connections(cluster, dbname):
    with cluster.admin(dbname) as conn:
        return conn.execute("""SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                               WHERE a.datname = current_database() AND a.application_name = 'flowline'""").fetchall()


# --- URLs -----------------------------------------------------------------------------------------------------


def test_mask_url_and_the_yoyo_url_keep_sslmode_and_sslrootcert():
    url = f"postgresql://app:{PASSWORD}@db.example.com:5432/flowline?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem"
    assert mask_url(url) == (
        "postgresql://app:***@db.example.com:5432/flowline?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem"
    )
    assert migrations.yoyo_url(url) == (
        f"postgresql+psycopg://app:{PASSWORD}@db.example.com:5432/flowline"
        "?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem"
    )


# --- a server that takes TLS only ------------------------------------------------------------------------------


def test_migrations_apply_over_verify_full(tls_cluster):
    dbname = tls_cluster.create_database()
    url = tls_cluster.url(dbname)
    assert migrations.apply(url) == migrations.migration_ids()
    assert migrations.apply(url) == []
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        assert migrations.pending(conn) == []
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()["ssl"] is True
    # The server refuses TCP without TLS, so everything above went over TLS; and yoyo verified the certificate
    # with the URL's sslrootcert: with another CA's, it refuses the server.
    with pytest.raises(psycopg.OperationalError, match="reject"):
        psycopg.connect(tls_cluster.url(dbname, sslmode="disable", root_cert=None), connect_timeout=5).close()
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        migrations.apply(tls_cluster.url(tls_cluster.create_database(), root_cert="other-ca"))


@pytest.mark.parametrize(
    "sslmode, host, root_cert",
    [
        ("verify-full", "localhost", "ca"),
        ("verify-full", "127.0.0.1", "ca"),
        ("verify-ca", "localhost", "ca"),
        ("require", "127.0.0.1", None),
    ],
)
def test_the_app_works_over_tls(tls_cluster, sslmode, host, root_cert):
    from app import create_app

    dbname = tls_cluster.create_database(tls_cluster.template)
    app = create_app({"TESTING": True, "DATABASE_URL": tls_cluster.url(dbname, sslmode, host, root_cert)})
    try:
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        created = client.post("/workflows", json={"name": "over TLS"})
        assert created.status_code == 200
        assert client.get(f"/workflows/{created.json['id']}").json["name"] == "over TLS"
        connections = ssl_of_app_connections(tls_cluster, dbname)
        assert connections and all(ssl and version.startswith("TLS") for ssl, version in connections)
    finally:
        app.extensions["flowline.pool"].close()
        app.extensions["flowline.provider"].close()


def test_gunicorn_serves_over_verify_full(tls_cluster, make_server):
    dbname = tls_cluster.create_database(tls_cluster.template)
    server = make_server(tls_cluster.url(dbname))
    server.start()
    status, created, _ = server.request("POST", "/workflows", {"name": "gunicorn over TLS"})
    assert status == 200
    assert server.request("GET", f"/workflows/{created['id']}")[1]["name"] == "gunicorn over TLS"
    assert all(ssl for ssl, _ in ssl_of_app_connections(tls_cluster, dbname))
    server.stop()
    assert PASSWORD not in server.log.read_text()


@pytest.mark.parametrize(
    "root_cert, host, extra, reason",
    [
        ("other-ca", "localhost", "", "certificate verify failed"),
        (Path("/nonexistent/flowline-ca.crt"), "localhost", "", "root certificate file"),
        # The right server and CA, reached under a name the certificate does not carry.
        ("ca", "db.example.com", "&hostaddr=127.0.0.1", 'does not match host name "db.example.com"'),
    ],
)
def test_a_certificate_that_does_not_verify_is_a_clear_503_with_no_secret(
    tls_cluster, caplog, root_cert, host, extra, reason
):
    from app import create_app

    dbname = tls_cluster.create_database(tls_cluster.template)
    app = create_app(
        {
            "TESTING": True,
            "DB_POOL_TIMEOUT_S": 0.5,
            "DATABASE_URL": tls_cluster.url(dbname, host=host, root_cert=root_cert, extra=extra),
        }
    )
    try:
        client = app.test_client()
        started = time.monotonic()
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json["checks"], ready.headers["Retry-After"]) == (
            503,
            {"database": "unreachable"},
            "1",
        )
        for response in (client.post("/workflows", json={"name": "never stored"}), client.get("/workflows")):
            assert response.status_code == 503 and response.headers["Retry-After"] == "1"
            assert response.json == {"detail": "The database is unavailable or busy; retry shortly."}
            assert PASSWORD not in response.get_data(as_text=True) and PASSWORD not in str(response.headers)
        assert time.monotonic() - started < 10
        # The operator learns why from the log (the pool's connection attempts), without the password.
        wait_for(lambda: reason in caplog.text, timeout=10, message=f"{reason!r} in the log")
        assert PASSWORD not in caplog.text
    finally:
        app.extensions["flowline.pool"].close()
        app.extensions["flowline.provider"].close()
