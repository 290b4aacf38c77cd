-- Webhooks: the webhooks table (per-workflow subscriptions and their signing secrets) and webhook_deliveries (the
-- outbox the workers deliver, with every attempt's history). Outbox rows are written by the trigger on runs
-- (migration 0009), never by a query here.

-- name: create_webhook :one
-- Inserts a subscription of an existing workflow; no row when the workflow does not exist.
INSERT INTO webhooks (workflow_id, url, events, enabled, secret)
SELECT id, %(url)s, %(events)s::text[], %(enabled)s, %(secret)s
FROM workflows
WHERE id = %(workflow_id)s
RETURNING id, workflow_id, url, events, enabled, disabled_reason, created_at, updated_at, version;

-- name: list_workflow_webhooks :many
-- Lists a workflow's subscriptions, newest first (never their secrets).
SELECT id, workflow_id, url, events, enabled, disabled_reason, created_at, updated_at, version
FROM webhooks
WHERE workflow_id = %(workflow_id)s
ORDER BY created_at DESC, id;

-- name: get_webhook :one
-- Returns one subscription (never its secret); no row when it does not exist.
SELECT id, workflow_id, url, events, enabled, disabled_reason, created_at, updated_at, version
FROM webhooks
WHERE id = %(webhook_id)s;

-- name: update_webhook :one
-- Changes a subscription's url, events or enabled (each only when set_<field>), bumping its version, only while its version is one of expected_versions (NULL: any); enabling clears disabled_reason.
UPDATE webhooks
SET url = CASE WHEN %(set_url)s THEN %(url)s ELSE url END,
    events = CASE WHEN %(set_events)s THEN %(events)s::text[] ELSE events END,
    enabled = CASE WHEN %(set_enabled)s THEN %(enabled)s ELSE enabled END,
    disabled_reason = CASE WHEN %(set_enabled)s AND %(enabled)s THEN NULL ELSE disabled_reason END,
    version = version + 1,
    updated_at = now()
WHERE id = %(webhook_id)s
  AND (%(expected_versions)s::integer[] IS NULL OR version = ANY (%(expected_versions)s::integer[]))
RETURNING id, workflow_id, url, events, enabled, disabled_reason, created_at, updated_at, version;

-- name: delete_webhook :one
-- Deletes a subscription (its deliveries cascade), only while its version is one of expected_versions (NULL: any).
DELETE FROM webhooks
WHERE id = %(webhook_id)s
  AND (%(expected_versions)s::integer[] IS NULL OR version = ANY (%(expected_versions)s::integer[]))
RETURNING id;

-- name: rotate_webhook_secret :one
-- Replaces a subscription's secret; the old one keeps signing beside it for overlap_seconds. Only while its version is one of expected_versions (NULL: any).
UPDATE webhooks
SET previous_secret = secret,
    previous_secret_expires_at = now() + make_interval(secs => %(overlap_seconds)s),
    secret = %(secret)s,
    version = version + 1,
    updated_at = now()
WHERE id = %(webhook_id)s
  AND (%(expected_versions)s::integer[] IS NULL OR version = ANY (%(expected_versions)s::integer[]))
RETURNING id, workflow_id, url, events, enabled, disabled_reason, created_at, updated_at, version,
          previous_secret_expires_at;

-- name: list_webhook_deliveries_page :many
-- Lists up to row_limit deliveries of one subscription, newest first, after the keyset cursor (NULL: from the start), with every attempt.
SELECT id, webhook_id, run_id, event_type, status, attempts, last_status_code, last_latency_ms, last_error,
       CASE WHEN status IN ('Pending', 'Delivering') THEN next_attempt_at END AS next_attempt_at,
       created_at, finished_at, history
FROM webhook_deliveries
WHERE webhook_id = %(webhook_id)s
  AND created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR created_at < %(after_created_at)s::timestamptz
       OR id > %(after_id)s::uuid)
ORDER BY created_at DESC, id
LIMIT %(row_limit)s;

-- name: retry_webhook_delivery :one
-- Makes a delivery not in flight due now (Pending) and wakes the delivery threads; returns its status before and whether its subscription is enabled, or no row for an unknown delivery.
WITH target AS (
    SELECT d.id, d.status, w.enabled
    FROM webhook_deliveries AS d
    JOIN webhooks AS w ON w.id = d.webhook_id
    WHERE d.id = %(delivery_id)s
    FOR UPDATE OF d
), retried AS (
    UPDATE webhook_deliveries AS d
    SET status = 'Pending',
        next_attempt_at = now(),
        finished_at = NULL
    FROM target
    WHERE d.id = target.id
      AND target.status <> 'Delivering'
      AND target.enabled
    RETURNING d.id
)
SELECT target.id, target.status AS previous_status, target.enabled,
       (SELECT count(*) FROM retried) AS retried
FROM target
LEFT JOIN LATERAL (SELECT pg_notify('flowline_webhooks', '') WHERE EXISTS (SELECT FROM retried)) AS wake ON true;

-- name: claim_webhook_delivery :one
-- Claims the oldest due delivery (Pending and due, or Delivering past its holder's lease), skipping rows other workers are claiming, under a fresh lease of lease_seconds; returns what signing and sending it needs, or no row.
WITH claimed AS (
    UPDATE webhook_deliveries AS d
    SET status = 'Delivering',
        attempts = d.attempts + 1,
        lease_token = %(lease_token)s,
        next_attempt_at = clock_timestamp() + make_interval(secs => %(lease_seconds)s),
        -- A delivery taken back from a holder that stopped renewing records that attempt's end.
        history = d.history || CASE WHEN d.status = 'Delivering'
                                    THEN jsonb_build_array(jsonb_build_object(
                                             'attempt', d.attempts, 'at', clock_timestamp(), 'outcome', 'lost',
                                             'error', 'the worker making this attempt stopped (its lease expired)'))
                                    ELSE '[]'::jsonb END
    WHERE d.id = (SELECT id
                  FROM webhook_deliveries
                  -- Served by webhook_deliveries_due_idx, in its order.
                  WHERE status IN ('Pending', 'Delivering')
                    AND next_attempt_at <= now()
                  ORDER BY next_attempt_at
                  LIMIT 1
                  FOR UPDATE SKIP LOCKED)
      AND d.status IN ('Pending', 'Delivering')
    RETURNING d.id, d.webhook_id, d.run_id, d.event_type, d.attempts, d.created_at
)
SELECT claimed.id, claimed.run_id, claimed.event_type, claimed.attempts, claimed.created_at,
       w.id AS webhook_id, w.url, w.enabled, w.secret,
       CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret END AS previous_secret
FROM claimed
JOIN webhooks AS w ON w.id = claimed.webhook_id;

-- name: record_webhook_attempt :one
-- Records one attempt of a delivery held under lease_token: its outcome (status Delivered, Pending to retry in retry_in_seconds, or Dead), its answer and error, appended to its history; disables the subscription when disable_reason is set. Writes nothing once the lease is lost.
WITH delivery AS (
    UPDATE webhook_deliveries
    SET status = %(status)s,
        lease_token = NULL,
        next_attempt_at = CASE WHEN %(status)s = 'Pending'
                               THEN clock_timestamp() + make_interval(secs => %(retry_in_seconds)s)
                               ELSE next_attempt_at END,
        finished_at = CASE WHEN %(status)s IN ('Delivered', 'Dead') THEN clock_timestamp() END,
        last_status_code = %(status_code)s,
        last_latency_ms = %(latency_ms)s,
        last_error = %(error)s,
        history = history || jsonb_build_array(jsonb_build_object(
            'attempt', attempts, 'at', clock_timestamp(), 'worker_id', %(worker_id)s::text,
            'outcome', %(outcome)s::text, 'status_code', %(status_code)s::integer,
            'latency_ms', %(latency_ms)s::integer, 'error', %(error)s::text))
    WHERE id = %(delivery_id)s
      AND lease_token = %(lease_token)s
      AND status = 'Delivering'
    RETURNING id, webhook_id
), disabled AS (
    UPDATE webhooks
    SET enabled = false,
        disabled_reason = %(disable_reason)s,
        version = version + 1,
        updated_at = now()
    FROM delivery
    WHERE webhooks.id = delivery.webhook_id
      AND %(disable_reason)s::text IS NOT NULL
      AND webhooks.enabled
    RETURNING webhooks.id
)
SELECT (SELECT count(*) FROM delivery) AS held,
       (SELECT count(*) FROM disabled) AS disabled;

-- name: get_webhook_outbox_stats :one
-- Returns the deliveries still to make (Pending or Delivering) and the Dead ones (each at most count_cap), and the age in seconds of the oldest due one (NULL: none).
SELECT
    -- Each count reads a partial index (webhook_deliveries_due_idx, webhook_deliveries_finished_idx) and stops at
    -- count_cap: its cost follows the outbox, not the history.
    (SELECT count(*)
     FROM (SELECT 1 FROM webhook_deliveries WHERE status IN ('Pending', 'Delivering') LIMIT %(count_cap)s) AS o)
        AS outbox,
    (SELECT count(*)
     FROM (SELECT 1 FROM webhook_deliveries WHERE status = 'Dead' LIMIT %(count_cap)s) AS d) AS dead,
    (SELECT extract(epoch FROM now() - min(next_attempt_at))
     FROM webhook_deliveries
     WHERE status IN ('Pending', 'Delivering')
       AND next_attempt_at <= now()) AS oldest_due_age_s;
