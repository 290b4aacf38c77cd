"""Webhook delivery: the worker's delivery threads send the outbox (webhook_deliveries, written by the trigger on
runs when a run finishes) to the subscribers' URLs, signed the Standard Webhooks way.

Each thread claims the oldest due delivery (``claim_webhook_delivery``: ``FOR UPDATE SKIP LOCKED``, a fresh lease
token, leased for WEBHOOK_LEASE_S), sends it without holding a database connection (flowline/worker/outbound.py,
bounded by WEBHOOK_TIMEOUT_S, below the lease), and records the attempt fenced by the token
(``record_webhook_attempt``): a 2xx is Delivered; a 410 is Dead and disables the subscription; anything else (another
status, a timeout, a refused connection, an address refused as private) is retried after the next wait of
WEBHOOK_RETRY_SCHEDULE_S, and once those are used up the delivery is Dead. A worker killed mid-attempt leaves its
delivery Delivering: past the lease another worker claims it again, so a delivery may arrive twice, always with the
same ``webhook-id`` (at least once; receivers dedupe on it).

The threads wake on ``NOTIFY flowline_webhooks`` (sent on commit by the trigger and by a manual retry, received by
the worker's LISTEN thread), so a delivery leaves within milliseconds of its run finishing; a retry's due time
and an expired lease are found by polling every WORKER_POLL_INTERVAL_S, as the run threads do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg

from ..core import logs, metrics
from ..core.statuses import DeliveryStatus
from ..core.webhook_signing import signature_header
from ..data import db
from . import outbound
from .listener import RECONNECT_CAP_S

if TYPE_CHECKING:
    from .process import Worker

log = logging.getLogger("flowline.worker")

# Most characters of an error kept in a delivery's last_error and history.
ERROR_CHARS = 500


class Deliveries:
    """The delivery threads of one worker process and the condition that wakes them."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        config = worker.config
        self.concurrency = config.webhook_concurrency
        self.lease_seconds = config.webhook_lease_s
        self.timeout_s = config.webhook_timeout_s
        self.schedule: tuple[float, ...] = config.webhook_retry_schedule_s
        self.allow_private = config.webhook_allow_private
        self._wakeup = threading.Condition()
        self._signals = 0

    def threads(self) -> list[threading.Thread]:
        """Return the (unstarted) delivery threads: WEBHOOK_CONCURRENCY of them."""
        return [
            threading.Thread(target=self._thread, args=(i,), name=f"webhook-{i}", daemon=True)
            for i in range(1, self.concurrency + 1)
        ]

    def wake(self, n: int = 1) -> None:
        """Wake up to ``n`` idle delivery threads to look at the outbox."""
        with self._wakeup:
            self._signals = min(self.concurrency, self._signals + n)
            self._wakeup.notify(n)

    def wake_all(self) -> None:
        """Wake every idle delivery thread (the LISTEN connection came back, or the worker stops)."""
        with self._wakeup:
            self._signals = self.concurrency
            self._wakeup.notify_all()

    def _wait(self) -> None:
        with self._wakeup:
            if self._signals == 0 and not self.worker.stopping.is_set():
                self._wakeup.wait(self.worker.config.worker_poll_interval_s)
            self._signals = max(0, self._signals - 1)

    def _thread(self, index: int) -> None:
        worker_id = f"{self.worker.id}:webhook-{index}"
        logs.bind(worker_id=worker_id)
        failures = 0
        while not self.worker.stopping.is_set():
            try:
                if not self.deliver_once(worker_id):
                    self._wait()
                failures = 0
            except psycopg.OperationalError as exc:
                failures += 1
                delay = min(RECONNECT_CAP_S, 0.1 * 2**failures)
                log.warning(
                    "worker %s: database unavailable for webhook delivery (%s); retrying in %.1f s",
                    worker_id,
                    type(exc).__name__,
                    delay,
                )
                self.worker.stopping.wait(delay)
            except Exception:
                log.exception(
                    "worker %s: webhook delivery failed; its lease will expire and it is sent again", worker_id
                )
                self.worker.stopping.wait(1.0)

    def deliver_once(self, worker_id: str) -> bool:
        """Claim one due delivery, send it and record the attempt; return False when none was due."""
        lease_token = uuid.uuid4()
        with db.connection(self.worker.pool) as conn:
            row = db.one(conn, "claim_webhook_delivery", lease_token=lease_token, lease_seconds=self.lease_seconds)
            if row is None:
                return False
            # A finished run no longer changes; a run deleted since the claim (prune-runs, its workflow deleted)
            # took this delivery with it.
            found = db.one(conn, "get_run_json", run_id=row["run_id"])
            if found is None:
                return True
            run = json.loads(found["body"])["run"]
        # More may be due: let an idle thread look too.
        self.wake()
        with logs.context(run_id=row["run_id"]):
            if row["enabled"]:
                answer, refused = self._send(row, run)
            else:
                answer, refused = outbound.Answer(None, 0, "not sent: the subscription is disabled"), True
            self._record(row, lease_token, worker_id, answer, refused)
        return True

    def _send(self, row: Mapping[str, Any], run: dict[str, Any]) -> tuple[outbound.Answer, bool]:
        """Sign and POST one delivery; return (Answer, whether it was refused before anything was sent)."""
        body = json.dumps(
            {"type": row["event_type"], "timestamp": row["created_at"].isoformat(), "data": {"run": run}},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        message_id = str(row["id"])
        timestamp = str(int(time.time()))
        secrets_in_use = [row["secret"]] + ([row["previous_secret"]] if row["previous_secret"] else [])
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": signature_header(secrets_in_use, message_id, timestamp, body),
        }
        try:
            return (
                outbound.post(row["url"], body, headers, timeout_s=self.timeout_s, allow_private=self.allow_private),
                False,
            )
        except outbound.Refused as exc:
            return outbound.Answer(None, 0, str(exc)), True

    def _record(
        self, row: Mapping[str, Any], lease_token: UUID, worker_id: str, answer: outbound.Answer, refused: bool
    ) -> None:
        attempt = row["attempts"]
        code = answer.status_code
        error = answer.error
        disable_reason = None
        if code is not None and 200 <= code < 300 and error is None:
            status, outcome = DeliveryStatus.DELIVERED, "delivered"
        elif code == 410:
            status, outcome = DeliveryStatus.DEAD, "gone"
            disable_reason = "the receiver answered 410 Gone: disabled (PATCH enabled=true to resume)"
        elif not row["enabled"]:
            status, outcome = DeliveryStatus.DEAD, "disabled"
        elif attempt <= len(self.schedule):
            status, outcome = DeliveryStatus.PENDING, "retry"
        else:
            status, outcome = DeliveryStatus.DEAD, "dead"
        if error is None and code is not None and status != DeliveryStatus.DELIVERED:
            error = f"HTTP {code}" + (f": {answer.excerpt}" if answer.excerpt else "")
        with db.connection(self.worker.pool) as conn:
            result = db.one(
                conn,
                "record_webhook_attempt",
                delivery_id=row["id"],
                lease_token=lease_token,
                status=status,
                retry_in_seconds=self.schedule[attempt - 1] if status == DeliveryStatus.PENDING else 0,
                status_code=code,
                latency_ms=answer.latency_ms,
                error=error and error[:ERROR_CHARS],
                worker_id=worker_id,
                outcome=outcome,
                disable_reason=disable_reason,
            )
        if result is None or not result["held"]:
            log.warning(
                "worker %s: lost the lease of webhook delivery %s (attempt %d) before recording it: another worker "
                "sends it again",
                worker_id,
                row["id"],
                attempt,
            )
            return
        metrics.webhook_attempt(outcome, None if refused else answer.latency_ms / 1000)
        # Never the URL (it may carry a receiver's token), nor the error that may quote it (a redirect's Location,
        # a host name), nor a secret: the history has the details.
        log.info(
            "worker %s: webhook delivery %s of subscription %s, attempt %d: %s (status %s)",
            worker_id,
            row["id"],
            row["webhook_id"],
            attempt,
            outcome,
            code if code is not None else "none",
        )
