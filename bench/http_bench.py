#!/usr/bin/env python3
"""Flowline's HTTP benchmark: req/s and p50/p99 per route, with two ceilings for the first two routes.

    .venv/bin/python -m bench.http_bench [--duration 10] [--warmup 2] [--rounds 1] [--routes create_workflow,...]

What it does, in one run:

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL).
   It then creates a fresh database on that server, applies the migrations, and drops the database at the end.
2. It starts Flowline with ``gunicorn -c gunicorn.conf.py`` (WEB_CONCURRENCY=2, access log off) and the bare
   app (``bench/bare_app.py``: the same SQL on one pooled connection per worker, no validation or middleware)
   with the same gunicorn settings, each on a free port.
3. It seeds through the HTTP API: a 20-node workflow, 64 empty workflows (node appends are spread over them), a
   5-node formatter workflow with one run (5 steps), and a workflow with 200 runs. The JSON routes of runs have
   the console's pages of the same runs beside them (a SECRET_KEY is made for the console when none is set).
4. Per route: a short wrk warm-up, then ``wrk -t2 -c16 -d<duration>s --latency``. For POST /workflows and
   GET /workflows/{id} it also measures the bare view (same wrk settings) and pgbench (the same SQL text,
   ``-M prepared``, 16 clients, 2 threads, same duration; the script is generated from sql/*.sql with psycopg's
   ``%(name)s`` placeholders turned into pgbench ``:name`` variables set by ``-D``).
   A measured wrk run is restarted (within its first second) while one gunicorn worker holds fewer than 4 of the
   16 keep-alive connections: which worker accepts a connection is a kernel race, and a 16/0 split halves the
   throughput of a 2-core box whatever the code does. Each run also records CPU busy/steal and the CPU time per
   request of the gunicorn workers and of PostgreSQL. ``--rounds N`` repeats everything, interleaved, and
   reports medians: on a shared 2-core VM single runs of the same code vary by 20-40%.
5. It prints the machine, a table and the targets of the issue, and writes bench/results/<timestamp>.json.

A route that answered anything but 2xx, or had socket errors, makes the run INVALID (exit status 1).
"""

import argparse
import json
import os
import re
import runpy
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import machine, support
from bench.support import RESULTS, ROOT, Server, http, say
from flowline.data import pgbin
from tests.support.urls import url_for_database

WRK_THREADS = 2
WRK_CONNECTIONS = 16
WORKERS = 2

# Targets from the issue.
BARE_SHARE_TARGET = 0.75
GET_TARGET = 1800.0
RUN_TARGET = 400.0

RUN_INPUT = "  Hello,   Ｆｌｏｗｌｉｎｅ   ﾃｽﾄ  world  "
FIVE_FORMATTERS = [
    {"rules": ["strip"]},
    {"rules": ["collapse_whitespace"]},
    {"rules": ["normalize_width"]},
    {"rules": ["lowercase"]},
    {"rules": ["uppercase"]},
]
NODE_BODY = {"node_type": "formatter", "config": {"rules": ["strip", "uppercase"]}}
# A measured run is restarted while a worker holds fewer of wrk's connections than it has threads (see run_wrk).
MIN_CONNS_PER_WORKER = 4
MAX_RESTARTS = 8
NODE_SPREAD = 64  # POST /workflows/{id}/nodes picks one of this many workflows at random per request


# --- small helpers ------------------------------------------------------------------------------------------


def lua_long_string(text):
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def run_text(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


# --- machine facts ------------------------------------------------------------------------------------------


def machine_facts(pg_conn, gunicorn_settings):
    wrk_version = run_text(["wrk", "--version"]).stdout.split("\n")[0].split(" [")[0].strip()
    return {
        **machine.facts(
            pg_conn,
            packages=("flask", "werkzeug", "gunicorn", "psycopg", "psycopg-binary", "psycopg-pool", "marshmallow"),
        ),
        "wrk": wrk_version,
        "gunicorn_settings": gunicorn_settings,
    }


def gunicorn_settings(env):
    """Read gunicorn.conf.py the way gunicorn will (with the benchmark's environment), without keeping its side effects."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
        pool_max = os.environ.get("DB_POOL_MAX_SIZE")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {
        "workers": conf["workers"],
        "worker_class": conf["worker_class"],
        "threads": conf["threads"],
        "keepalive": conf["keepalive"],
        "accesslog": conf["accesslog"],
        "loglevel": conf["loglevel"],
        "preload_app": conf["preload_app"],
        "db_pool_max_size": int(pool_max) if pool_max else None,
        "bare_pool_size": int(env.get("BARE_POOL_SIZE", "1")),
    }


# --- servers ------------------------------------------------------------------------------------------------


# --- seeding ------------------------------------------------------------------------------------------------


def seed(base):
    """Create everything the routes read or write, through the API; return the ids the routes need."""
    t0 = time.monotonic()
    w20 = http("POST", f"{base}/workflows", {"name": "bench: 20 nodes"})["id"]
    for i in range(20):
        http(
            "POST",
            f"{base}/workflows/{w20}/nodes",
            {"node_type": "formatter", "config": {"rules": ["strip", "collapse_whitespace", "uppercase"][: 1 + i % 3]}},
        )
    spread = [http("POST", f"{base}/workflows", {"name": f"bench: node target {i}"})["id"] for i in range(NODE_SPREAD)]

    w5 = http("POST", f"{base}/workflows", {"name": "bench: 5 formatters"})["id"]
    for config in FIVE_FORMATTERS:
        http("POST", f"{base}/workflows/{w5}/nodes", {"node_type": "formatter", "config": config})
    run5 = http("POST", f"{base}/workflows/{w5}/run", {"input_text": RUN_INPUT})["run_id"]

    w200 = http("POST", f"{base}/workflows", {"name": "bench: 200 runs"})["id"]
    for config in FIVE_FORMATTERS:
        http("POST", f"{base}/workflows/{w200}/nodes", {"node_type": "formatter", "config": config})
    for i in range(200):
        http("POST", f"{base}/workflows/{w200}/run", {"input_text": f"{RUN_INPUT} #{i}"})

    # Check the shapes the routes are meant to read.
    got = http("GET", f"{base}/workflows/{w20}")
    assert len(got["nodes"]) == 20, len(got["nodes"])
    got = http("GET", f"{base}/workflows/{w200}/runs")
    assert len(got["runs"]) == 200, len(got["runs"])
    got = http("GET", f"{base}/runs/{run5}")
    assert len(got["steps"]) == 5 and got["run"]["status"] == "Succeeded", got
    say(f"seeded through the API in {time.monotonic() - t0:.1f}s")
    return {"w20": w20, "spread": spread, "w5": w5, "run5": run5, "w200": w200}


# --- routes -------------------------------------------------------------------------------------------------


def routes(ids):
    """The benchmarked routes, in order: (key, label, method, path, lua script or None, kind)."""
    spread = ", ".join(f'"{i}"' for i in ids["spread"])
    return [
        (
            "create_workflow",
            "POST /workflows",
            "POST",
            "/workflows",
            _post_lua("/workflows", {"name": "bench workflow"}),
            "post",
        ),
        ("get_workflow", "GET /workflows/{id} (20 nodes)", "GET", f"/workflows/{ids['w20']}", None, "get"),
        (
            "add_node",
            f"POST /workflows/{{id}}/nodes ({NODE_SPREAD} wfs)",
            "POST",
            None,
            f"""local ids = {{{spread}}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local body = {lua_long_string(json.dumps(NODE_BODY))}
request = function()
  return wrk.format(nil, "/workflows/" .. ids[math.random(#ids)] .. "/nodes", nil, body)
end
""",
            "post",
        ),
        (
            "run_workflow",
            "POST /workflows/{id}/run (5 formatters)",
            "POST",
            f"/workflows/{ids['w5']}/run",
            _post_lua(f"/workflows/{ids['w5']}/run", {"input_text": RUN_INPUT}),
            "run",
        ),
        ("list_runs", "GET /workflows/{id}/runs (200 runs)", "GET", f"/workflows/{ids['w200']}/runs", None, "get"),
        ("get_run", "GET /runs/{id} (5 steps)", "GET", f"/runs/{ids['run5']}", None, "get"),
        # The console's pages of the same runs (HTML; no req/s target: bench/runs_list_bench.py times them at 1M runs).
        (
            "console_runs",
            "GET /console/runs?workflow_id= (200 runs)",
            "GET",
            f"/console/runs?workflow_id={ids['w200']}",
            None,
            "page",
        ),
        ("console_run", "GET /console/runs/{id} (5 steps)", "GET", f"/console/runs/{ids['run5']}", None, "page"),
    ]


def _post_lua(path, body):
    return f"""wrk.method = "POST"
wrk.path = "{path}"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {lua_long_string(json.dumps(body))}
"""


ROUTE_KEYS = (
    "create_workflow",
    "get_workflow",
    "add_node",
    "run_workflow",
    "list_runs",
    "get_run",
    "console_runs",
    "console_run",
)
CEILING_ROUTES = ("create_workflow", "get_workflow")


# --- wrk ----------------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m[1]) * _UNITS[m[2]] if m else None


def parse_wrk(out):
    result = {
        "requests_per_s": None,
        "p50_ms": None,
        "p99_ms": None,
        "requests": None,
        "non_2xx": 0,
        "socket_errors": 0,
    }
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["requests_per_s"] = float(m[1])
    if m := re.search(r"(\d+) requests in", out):
        result["requests"] = int(m[1])
    if m := re.search(r"^\s+50(?:\.000)?%\s+(\S+)", out, re.M):
        result["p50_ms"] = _ms(m[1])
    if m := re.search(r"^\s+99(?:\.000)?%\s+(\S+)", out, re.M):
        result["p99_ms"] = _ms(m[1])
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        result["non_2xx"] = int(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result["socket_errors"] = sum(int(x) for x in m.groups())
    return result


def cpu_times():
    """The machine's aggregate CPU counters (user nice system idle iowait irq softirq steal), from /proc/stat."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None


def cpu_usage(before, after):
    """Busy and steal shares of the machine's CPU time between two cpu_times() readings, in percent."""
    if not before or not after:
        return None
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    return {"busy_pct": round(100 * (total - d[3] - d[4] - d[7]) / total, 1), "steal_pct": round(100 * d[7] / total, 1)}


_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(worker_pids):
    """CPU seconds used so far by ``worker_pids`` (together) and by every ``postgres`` process, from /proc."""
    workers, postgres = 0, 0
    worker_pids = {str(p) for p in worker_pids}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        if pid in worker_pids:
            workers += ticks
        elif comm == "postgres":
            postgres += ticks
    return workers / _CLK, postgres / _CLK


def worker_connections(server):
    """Established TCP connections to ``server``'s port, per worker pid (read from /proc, Linux only)."""
    port_hex = f"{server.port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[1].endswith(":" + port_hex) and f[3] == "01":  # local address is ours, state ESTABLISHED
                inodes.add(f[9])
    counts = {}
    for pid in server.worker_pids():
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    n += 1
        except OSError:
            continue
        counts[pid] = n
    return counts


def run_wrk(server, path, lua, duration, tmp, name, balanced=False):
    """Run wrk against ``server``; return its parsed numbers (and the raw output).

    With ``balanced``, the run is restarted (up to MAX_RESTARTS times, within its first second) while a worker
    holds fewer than MIN_CONNS_PER_WORKER of wrk's keep-alive connections: which worker accepts each connection
    is the kernel's race, and a 16/0 split halves the throughput of a 2-core box whatever the code does.
    """
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if lua:
        script = Path(tmp) / f"{name}.lua"
        script.write_text(lua)
        cmd += ["-s", str(script)]
    cmd.append(server.base + (path or "/"))
    restarts = 0
    while True:
        before, procs_before = cpu_times(), process_cpu(server.worker_pids())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        split = None
        if balanced:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                time.sleep(0.05)
                counts = worker_connections(server)
                if sum(counts.values()) >= WRK_CONNECTIONS:
                    break
            split = sorted(counts.values(), reverse=True)
            if (min(split, default=0) < MIN_CONNS_PER_WORKER or len(split) < WORKERS) and restarts < MAX_RESTARTS:
                proc.kill()
                proc.communicate()
                restarts += 1
                time.sleep(0.2)
                continue
        out, err = proc.communicate()
        cpu, procs_after = cpu_usage(before, cpu_times()), process_cpu(server.worker_pids())
        break
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}\n{err}")
    result = parse_wrk(out)
    result["connection_split"] = split
    result["restarts"] = restarts
    result["cpu"] = cpu
    if cpu and result["requests"]:
        cpu["gunicorn_workers_us_per_request"] = round((procs_after[0] - procs_before[0]) / result["requests"] * 1e6)
        cpu["postgres_us_per_request"] = round((procs_after[1] - procs_before[1]) / result["requests"] * 1e6)
    result["raw"] = out
    return result


# --- pgbench ------------------------------------------------------------------------------------------------


def pgbench_script(query_name, tmp):
    """The named query's SQL text, with psycopg's %(name)s placeholders as pgbench's :name variables."""
    from flowline.data.sql import QUERIES

    text = QUERIES[query_name].text
    text = re.sub(r"%\((\w+)\)s", r":\1", text).replace("%%", "%")
    if not text.rstrip().endswith(";"):
        text += ";"
    path = Path(tmp) / f"pgbench_{query_name}.sql"
    path.write_text(f"-- {query_name} from sql/*.sql (generated by bench/http_bench.py)\n{text}\n")
    return path


def run_pgbench(binary, db_url, script, variables, duration, tmp, sample=0.1):
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(db_url)
    env = dict(os.environ)
    for key, var in (
        ("host", "PGHOST"),
        ("port", "PGPORT"),
        ("user", "PGUSER"),
        ("dbname", "PGDATABASE"),
        ("password", "PGPASSWORD"),
    ):
        if params.get(key):
            env[var] = str(params[key])
    logdir = Path(tmp) / f"pgbench_{script.stem}_{time.monotonic_ns()}"
    logdir.mkdir()
    cmd = [
        binary,
        "-n",
        "-M",
        "prepared",
        "-c",
        str(WRK_CONNECTIONS),
        "-j",
        str(WRK_THREADS),
        "-T",
        str(duration),
        "-f",
        str(script),
        "-l",
        "--sampling-rate",
        str(sample),
        "--log-prefix",
        str(logdir / "log"),
    ]
    for key, value in variables.items():
        cmd += ["-D", f"{key}={value}"]
    proc = run_text(cmd, env=env)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "tps =" not in out:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{out}")
    latencies = []
    for log in logdir.iterdir():
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3:
                latencies.append(int(fields[2]) / 1000.0)  # µs -> ms
    latencies.sort()
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return {
        "tps": float(re.search(r"tps = ([\d.]+)", out)[1]),
        "latency_avg_ms": float(m[1]) if (m := re.search(r"latency average = ([\d.]+) ms", out)) else None,
        "p50_ms": _pct(latencies, 0.50),
        "p99_ms": _pct(latencies, 0.99),
        "failed": int(failed[1]) if failed else 0,
        "sampled_transactions": len(latencies),
        "raw": out,
    }


def _pct(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def aggregate(rounds):
    """One row per route: the round with the median req/s, the median share of bare, every round's errors."""
    if len(rounds) == 1:
        return rounds[0]

    def median_of(items, value):
        return sorted(items, key=value)[(len(items) - 1) // 2]

    row = dict(median_of(rounds, lambda r: r["requests_per_s"]))
    row["rounds"] = [{k: v for k, v in r.items() if k != "raw"} for r in rounds]
    row["requests_per_s_range"] = [min(r["requests_per_s"] for r in rounds), max(r["requests_per_s"] for r in rounds)]
    row["non_2xx"] = sum(r["non_2xx"] for r in rounds)
    row["socket_errors"] = sum(r["socket_errors"] for r in rounds)
    if "bare" in row:
        row["bare"] = dict(median_of([r["bare"] for r in rounds], lambda b: b["requests_per_s"]))
        row["bare"]["requests_per_s_range"] = [
            min(r["bare"]["requests_per_s"] for r in rounds),
            max(r["bare"]["requests_per_s"] for r in rounds),
        ]
        row["bare"]["non_2xx"] = sum(r["bare"]["non_2xx"] for r in rounds)
        row["bare"]["socket_errors"] = sum(r["bare"]["socket_errors"] for r in rounds)
        row["share_of_bare"] = median_of([r["share_of_bare"] for r in rounds], lambda x: x)
        row["share_of_bare_each_round"] = [round(r["share_of_bare"], 3) for r in rounds]
    if "pgbench" in row:
        row["pgbench"] = dict(median_of([r["pgbench"] for r in rounds], lambda b: b["tps"]))
        row["pgbench"]["failed"] = sum(r["pgbench"]["failed"] for r in rounds)
    return row


# --- report -------------------------------------------------------------------------------------------------


def fmt(value, spec="{:,.0f}"):
    return "-" if value is None else spec.format(value)


def report(facts, rows, targets, duration, elapsed, valid, rounds=1):
    g = facts["gunicorn_settings"]
    p = facts["postgresql_settings"]
    lines = [
        "Flowline HTTP benchmark  " + datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        f"machine     {facts['hostname']}: {facts['cpu_model']}, {facts['cores']} cores "
        f"({facts['cores_usable']} usable), {facts['ram_gib']} GiB RAM",
        f"os          {facts['os']}, kernel {facts['kernel']}; load average at start "
        + ", ".join(f"{x:.2f}" for x in facts["load_average_at_start"]),
        f"python      {facts['python']}; " + ", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v),
        f"postgresql  {facts['postgresql']} via {facts['postgresql_via']} (fsync={p['fsync']}, "
        f"synchronous_commit={p['synchronous_commit']}, shared_buffers={p['shared_buffers']}); same machine",
        f"gunicorn    {g['workers']} workers x {g['threads']} {g['worker_class']} threads, keepalive {g['keepalive']}s, "
        f"access log {'off' if not g['accesslog'] else g['accesslog']}, log level {g['loglevel']}; "
        f"Flowline pool max {g['db_pool_max_size']}/worker, bare pool {g['bare_pool_size']}/worker",
        f"load        {facts['wrk']}: -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{duration}s --latency "
        f"(after a warm-up){f', {rounds} interleaved rounds, medians shown' if rounds > 1 else ''}; pgbench -M prepared -c{WRK_CONNECTIONS} -j{WRK_THREADS} -T{duration}; "
        "all on this machine",
        "",
    ]
    header = [
        "route",
        "req/s",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "conns",
        "cpu/steal%",
        "CPU us/req py/pg",
        "bare req/s",
        "pgbench tps",
        "% of bare",
    ]
    table = []
    for r in rows:
        bare, pgb = r.get("bare"), r.get("pgbench")
        table.append(
            [
                r["label"],
                fmt(r["requests_per_s"]),
                fmt(r["p50_ms"], "{:.2f}"),
                fmt(r["p99_ms"], "{:.2f}"),
                str(r["non_2xx"] + r["socket_errors"]),
                _split(r),
                _cpu(r),
                _per_request(r),
                fmt(bare and bare["requests_per_s"]),
                fmt(pgb and pgb["tps"]),
                f"{r['share_of_bare'] * 100:.0f}%" if r.get("share_of_bare") is not None else "-",
            ]
        )
        if rounds > 1:
            lo, hi = r["requests_per_s_range"]
            table[-1].insert(2, f"{lo:,.0f}-{hi:,.0f}")
            shares = r.get("share_of_bare_each_round")
            table[-1].append("/".join(f"{x * 100:.0f}" for x in shares) if shares else "-")
    if rounds > 1:
        header = [*header[:2], "range", *header[2:], "% each round"]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=True)]
    for i, row in enumerate([header, *table]):
        lines.append(
            "  ".join(
                str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [
        "",
        "conns: wrk's keep-alive connections per gunicorn worker (rN: restarted N times in its first second because a",
        f"  worker held < {MIN_CONNS_PER_WORKER}). cpu/steal%: machine CPU busy / hypervisor steal during the run. "
        "CPU us/req: CPU of the",
        "  server's gunicorn workers (py) and of all postgres processes (pg) per request.",
        "",
        "ceilings (bare: bench/bare_app.py, the same sql/*.sql query on 1 pooled connection per worker, same gunicorn",
        "settings, no validation/middleware/pool check; pgbench: that query alone, sampled latencies):",
    ]
    for r in rows:
        b, pgb = r.get("bare"), r.get("pgbench")
        if b:
            lines.append(
                f"  {r['label']}: bare {b['requests_per_s']:,.0f} req/s, p50 {b['p50_ms']:.2f} / p99 "
                f"{b['p99_ms']:.2f} ms, non-2xx {b['non_2xx'] + b['socket_errors']}, conns {_split(b)}, "
                f"cpu/steal {_cpu(b)}%, CPU us/req py/pg {_per_request(b)}"
            )
        if pgb:
            lines.append(
                f"  {' ' * len(r['label'])}  pgbench {pgb['tps']:,.0f} tps, p50 {fmt(pgb['p50_ms'], '{:.2f}')} / "
                f"p99 {fmt(pgb['p99_ms'], '{:.2f}')} ms, failed {pgb['failed']}"
            )
    noisy = [r["label"] for r in rows for x in (r, r.get("bare")) if x and x.get("cpu") and x["cpu"]["steal_pct"] >= 5]
    if noisy:
        lines.append("")
        lines.append("note: >= 5% CPU steal (a noisy neighbour) during: " + ", ".join(dict.fromkeys(noisy)))
    lines.append("")
    lines.append("targets (issue):")
    for t in targets:
        lines.append(f"  [{'met   ' if t['met'] else 'MISSED'}] {t['what']}: {t['detail']}")
    lines.append("")
    lines.append(
        "result: "
        + (
            "VALID (every response 2xx, no socket errors)"
            if valid
            else "INVALID: some responses were not 2xx or had socket errors (see non-2xx)"
        )
    )
    lines.append(f"took {elapsed:.0f}s")
    return "\n".join(lines)


def _split(r):
    return "/".join(map(str, r["connection_split"] or [])) + (f" r{r['restarts']}" if r["restarts"] else "")


def _cpu(r):
    return f"{r['cpu']['busy_pct']:.0f}/{r['cpu']['steal_pct']:.0f}" if r.get("cpu") else "-"


def _per_request(r):
    c = r.get("cpu") or {}
    if "gunicorn_workers_us_per_request" not in c:
        return "-"
    return f"{c['gunicorn_workers_us_per_request']:,}/{c['postgres_us_per_request']:,}"


def evaluate(rows):
    targets = []
    by_key = {r["key"]: r for r in rows}
    for key in CEILING_ROUTES:
        r = by_key.get(key)
        if r and r.get("share_of_bare") is not None:
            targets.append(
                {
                    "what": f"{r['label']} >= {BARE_SHARE_TARGET:.0%} of its bare view",
                    "met": r["share_of_bare"] >= BARE_SHARE_TARGET,
                    "detail": f"{r['requests_per_s']:,.0f} / {r['bare']['requests_per_s']:,.0f} req/s "
                    f"= {r['share_of_bare']:.0%}",
                }
            )
    for r in rows:
        if r["kind"] == "get":
            targets.append(
                {
                    "what": f"{r['label']} >= {GET_TARGET:,.0f} req/s",
                    "met": r["requests_per_s"] >= GET_TARGET,
                    "detail": f"{r['requests_per_s']:,.0f} req/s",
                }
            )
        if r["kind"] == "run":
            targets.append(
                {
                    "what": f"{r['label']} >= {RUN_TARGET:,.0f} runs/s",
                    "met": r["requests_per_s"] >= RUN_TARGET,
                    "detail": f"{r['requests_per_s']:,.0f} runs/s",
                }
            )
    return targets


# --- main ---------------------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk/pgbench run (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up before each measured run (default 2)")
    ap.add_argument(
        "--routes", default=",".join(ROUTE_KEYS), help="comma-separated subset of: " + ", ".join(ROUTE_KEYS)
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every route this many times, rounds interleaved; the table shows medians (default 1)",
    )
    ap.add_argument("--no-ceilings", action="store_true", help="skip the bare-view and pgbench ceilings")
    ap.add_argument(
        "--keep-servers",
        type=int,
        default=0,
        metavar="SECONDS",
        help="after the run, keep the servers up this long (for profiling)",
    )
    args = ap.parse_args(argv)
    args.routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = set(args.routes) - set(ROUTE_KEYS)
    if unknown:
        ap.error(f"unknown route(s) {', '.join(sorted(unknown))}; choose from {', '.join(ROUTE_KEYS)}")
    return args


def main(argv):
    args = parse_args(argv)
    if not shutil.which("wrk"):
        print("install wrk: apt-get install wrk", file=sys.stderr)
        return 2
    started = time.monotonic()
    pg_url = support.server_url()
    dbname = f"flowline_bench_{uuid.uuid4().hex[:10]}"
    db_url = url_for_database(pg_url, dbname)
    tmp = tempfile.mkdtemp(prefix="flowline-bench.")
    servers = []
    admin = psycopg.connect(pg_url, autocommit=True)
    admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        env = dict(os.environ, DATABASE_URL=db_url, WEB_CONCURRENCY=str(WORKERS), ACCESS_LOG="", LOG_LEVEL="warning")
        # The console's pages answer 503 without one; every gunicorn worker gets the same.
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
        env.pop("BIND", None)
        migrate = run_text([sys.executable, "-m", "flowline.data.migrations", "apply"], cwd=ROOT, env=env)
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{migrate.stdout}{migrate.stderr}")
        settings = gunicorn_settings(env)

        app = Server("flowline", "app:create_app()", env, tmp)
        servers.append(app)
        bare = None
        want_ceilings = not args.no_ceilings and any(k in args.routes for k in CEILING_ROUTES)
        if want_ceilings:
            bare = Server("bare", "bench.bare_app:create_app()", env, tmp)
            servers.append(bare)
        app.wait_ready("/livez")
        ids = seed(app.base)
        if bare:
            bare.wait_ready(f"/workflows/{ids['w20']}")
        with psycopg.connect(db_url) as conn:
            facts = machine_facts(conn, settings)
        pgbench = pgbin.program("pgbench") if want_ceilings else None
        if want_ceilings and not pgbench:
            say("pgbench not found (PGBIN or PATH): the pgbench ceiling is skipped")

        measured = {}  # route key -> one row per round
        for round_no in range(1, args.rounds + 1):
            for key, label, method, path, lua, kind in routes(ids):
                if key not in args.routes:
                    continue
                tag = f"{label} (round {round_no}/{args.rounds})" if args.rounds > 1 else label
                say(f"{tag}: warm-up {args.warmup}s, then {args.duration}s")
                if args.warmup:
                    run_wrk(app, path, lua, args.warmup, tmp, key)
                row = {
                    "key": key,
                    "label": label,
                    "method": method,
                    "kind": kind,
                    **run_wrk(app, path, lua, args.duration, tmp, key, balanced=True),
                }
                if key in CEILING_ROUTES and want_ceilings:
                    say(f"{tag}: bare view, warm-up {args.warmup}s, then {args.duration}s")
                    if args.warmup:
                        run_wrk(bare, path, lua, args.warmup, tmp, key)
                    row["bare"] = run_wrk(bare, path, lua, args.duration, tmp, key, balanced=True)
                    row["share_of_bare"] = row["requests_per_s"] / row["bare"]["requests_per_s"]
                    if pgbench:
                        say(f"{tag}: pgbench {args.duration}s")
                        query, variables = {
                            "create_workflow": ("create_workflow", {"name": "bench workflow"}),
                            "get_workflow": ("get_workflow_json", {"workflow_id": ids["w20"]}),
                        }[key]
                        row["pgbench"] = run_pgbench(
                            pgbench, db_url, pgbench_script(query, tmp), variables, args.duration, tmp
                        )
                measured.setdefault(key, []).append(row)
        rows = [aggregate(r) for r in measured.values()]

        if args.keep_servers:
            say(f"servers kept for {args.keep_servers}s: flowline {app.base}" + (f", bare {bare.base}" if bare else ""))
            say(f"worker pids: {run_text(['pgrep', '-P', str(app.proc.pid)]).stdout.split()}")
            time.sleep(args.keep_servers)
    except BaseException:
        for s in servers:
            say(f"--- {s.name} log (tail) ---\n{s.log_tail()}")
        raise
    finally:
        for s in servers:
            s.stop()
        try:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        finally:
            admin.close()
        shutil.rmtree(tmp, ignore_errors=True)

    valid = all(
        r["non_2xx"] == 0
        and r["socket_errors"] == 0
        and (not r.get("bare") or (r["bare"]["non_2xx"] == 0 and r["bare"]["socket_errors"] == 0))
        and (not r.get("pgbench") or r["pgbench"]["failed"] == 0)
        for r in rows
    )
    targets = evaluate(rows)
    elapsed = time.monotonic() - started
    print(report(facts, rows, targets, args.duration, elapsed, valid, args.rounds))

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "timestamp": stamp,
                "git_commit": run_text(["git", "rev-parse", "HEAD"], cwd=ROOT).stdout.strip() or None,
                "git_dirty": bool(run_text(["git", "status", "--porcelain"], cwd=ROOT).stdout.strip()),
                "machine": facts,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "wrk": {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS},
                "valid": valid,
                "routes": rows,
                "targets": targets,
                "elapsed_s": round(elapsed, 1),
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"results: {out.relative_to(ROOT)}")
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
