# Flowline's image: gunicorn serving 'app:create_app()' (the api service) or `flask --app app worker` (the worker
# service). Migrations run from the same image as a one-shot (`python -m flowline.data.migrations apply`, the compose
# `migrate` service); this image never applies them itself.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BIND=0.0.0.0:8000 \
    LOG_FORMAT=json

WORKDIR /app

# Runtime requirements only (requirements-dev.txt stays out); psycopg-binary bundles libpq, so no apt packages.
# Copied alone first so a code change does not reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# A fixed numeric uid, so orchestrators enforcing "run as non-root" can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 flowline \
 && useradd --system --uid 10001 --gid flowline --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin flowline

# The code stays root-owned and read-only to the service user.
COPY app.py gunicorn.conf.py ./
COPY flowline/ ./flowline/
COPY sql/ ./sql/
COPY migrations/ ./migrations/

USER 10001:10001

EXPOSE 8000

# Liveness only (/livez touches no database); the port follows BIND. slim has no curl, so python's urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('BIND', '0.0.0.0:8000').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
