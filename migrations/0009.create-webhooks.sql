-- Creates webhooks (per-workflow subscriptions to runs' final statuses, with their signing secrets) and
-- webhook_deliveries (the outbox: one row per subscription and finished run, delivered by the workers), and the
-- trigger on runs that writes the outbox rows in the same statement that gives a run its final status.
-- Rollback (0009.create-webhooks.rollback.sql) drops them: subscriptions, secrets and delivery history are lost.

-- For DBAs: a subscription's secret must stay readable by the service (it signs every delivery with it); it never
-- leaves the database except in the answer that created (or rotated) it.
CREATE TABLE webhooks (
    id                         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id                uuid        NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    url                        text        NOT NULL,
    -- Among run.succeeded, run.failed, run.cancelled.
    events                     text[]      NOT NULL,
    enabled                    boolean     NOT NULL DEFAULT true,
    -- Why it is disabled when the service disabled it (the receiver answered 410 Gone); NULL once enabled.
    disabled_reason            text,
    -- whsec_ + base64 of 32 random bytes (Standard Webhooks); the HMAC key is the decoded bytes.
    secret                     text        NOT NULL,
    -- The secret before the latest rotation, signing beside the new one until previous_secret_expires_at.
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    version                    integer     NOT NULL DEFAULT 1,
    CONSTRAINT webhooks_url_length CHECK (char_length(url) BETWEEN 1 AND 2000),
    CONSTRAINT webhooks_events_valid CHECK (
        cardinality(events) >= 1 AND events <@ ARRAY['run.succeeded', 'run.failed', 'run.cancelled']::text[]),
    CONSTRAINT webhooks_secret_format CHECK (secret LIKE 'whsec\_%'),
    CONSTRAINT webhooks_previous_secret_pair CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);
-- The trigger's lookup of a finished run's subscriptions, and GET /workflows/{id}/webhooks' order.
CREATE INDEX webhooks_workflow_idx ON webhooks (workflow_id, created_at DESC, id);

CREATE TABLE webhook_deliveries (
    -- Also the webhook-id header: the same across every attempt, so a receiver dedupes on it.
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id        uuid        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    run_id            uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    event_type        text        NOT NULL,
    -- Pending: waits for next_attempt_at; Delivering: a worker holds it under lease_token until next_attempt_at
    -- (its lease), after which another worker takes it again; Delivered: a 2xx answered; Dead: no attempt left,
    -- or the subscription is disabled (POST /deliveries/{id}/retry makes either due again).
    status            text        NOT NULL DEFAULT 'Pending',
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_token       uuid,
    last_status_code  integer,
    last_latency_ms   integer,
    last_error        text,
    -- Every attempt, oldest first: {attempt, at, worker_id, status_code, latency_ms, error, outcome}.
    history           jsonb       NOT NULL DEFAULT '[]',
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- When it became Delivered or Dead (what prune-runs' cutoff compares).
    finished_at       timestamptz,
    CONSTRAINT webhook_deliveries_status_valid CHECK (status IN ('Pending', 'Delivering', 'Delivered', 'Dead')),
    CONSTRAINT webhook_deliveries_event_type_valid CHECK (event_type IN ('run.succeeded', 'run.failed', 'run.cancelled')),
    CONSTRAINT webhook_deliveries_lease_held CHECK ((status = 'Delivering') = (lease_token IS NOT NULL)),
    CONSTRAINT webhook_deliveries_finished CHECK ((status IN ('Delivered', 'Dead')) = (finished_at IS NOT NULL)),
    CONSTRAINT webhook_deliveries_attempts_valid CHECK (attempts >= 0)
);
-- The outbox the workers claim from, oldest due first: only rows still to deliver, so it stays small.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status IN ('Pending', 'Delivering');
-- GET /webhooks/{id}/deliveries, newest first.
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at DESC, id);
-- Runs' deletes (prune-runs, a deleted workflow) cascade here.
CREATE INDEX webhook_deliveries_run_idx ON webhook_deliveries (run_id);
-- prune-runs and the dead-delivery gauge.
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (status, finished_at) WHERE status IN ('Delivered', 'Dead');

-- One outbox row per enabled subscription of the run's workflow that wants this final status, written by the
-- statement that finished the run (finish_run, requeue_run's cancel branch, cancel_run, the lease sweep), so a
-- run never finishes without its deliveries, nor gets one without finishing. Runs are never inserted in a final
-- status by the service (sync runs start Running); imported history fires nothing, as it should not.
CREATE FUNCTION queue_webhook_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, run_id, event_type)
    SELECT w.id, NEW.id, 'run.' || lower(NEW.status)
    FROM webhooks AS w
    WHERE w.workflow_id = NEW.workflow_id
      AND w.enabled
      AND 'run.' || lower(NEW.status) = ANY (w.events);
    IF FOUND THEN
        -- Wakes the workers' delivery threads on commit; only when there is something to deliver.
        PERFORM pg_notify('flowline_webhooks', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER runs_queue_webhook_deliveries
AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.status IN ('Succeeded', 'Failed', 'Cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION queue_webhook_deliveries();
