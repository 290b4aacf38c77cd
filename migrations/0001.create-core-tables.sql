-- Creates Flowline's core tables: workflows, their ordered nodes, runs (also the async queue), run steps and run events.
-- Rollback (0001.create-core-tables.rollback.sql) drops them all: every workflow and all run history is lost.

CREATE TABLE workflows (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Incremented on every change to the workflow or its nodes (optimistic locking, ETag).
    version     integer     NOT NULL DEFAULT 1,
    CONSTRAINT workflows_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT workflows_version_positive CHECK (version >= 1)
);

-- Keyset pagination of the workflow list, newest first.
CREATE INDEX workflows_created_at_idx ON workflows (created_at DESC, id);

CREATE TABLE nodes (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id uuid        NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    -- 0-based, gap-free execution order within the workflow.
    position    integer     NOT NULL,
    -- One of extract_text, generative_ai, formatter: validated by the application so a new type needs no migration.
    node_type   text        NOT NULL,
    -- Stored exactly as the client sent it, after validation; defaults are applied at execution.
    config      jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer     NOT NULL DEFAULT 1,
    CONSTRAINT nodes_position_non_negative CHECK (position >= 0),
    CONSTRAINT nodes_node_type_length CHECK (char_length(node_type) BETWEEN 1 AND 50),
    CONSTRAINT nodes_config_is_object CHECK (jsonb_typeof(config) = 'object'),
    CONSTRAINT nodes_version_positive CHECK (version >= 1),
    -- Deferrable so a reorder can swap positions inside one transaction; its index also serves
    -- "nodes of a workflow in position order".
    CONSTRAINT nodes_workflow_position_key UNIQUE (workflow_id, position) DEFERRABLE INITIALLY IMMEDIATE
);

CREATE TABLE runs (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id      uuid        NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    -- sync: executed inside the HTTP request; async: queued for a worker.
    mode             text        NOT NULL,
    -- Pending (queued), Running, Succeeded, Failed, Cancelled.
    status           text        NOT NULL DEFAULT 'Pending',
    -- What the client asked to run on: {"input_text": ...} or {"file_id": ...}.
    input            jsonb       NOT NULL DEFAULT '{}',
    final_output     text,
    error_message    text,
    -- 0 until first claimed; incremented by every claim.
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 1,
    -- A Pending run is not claimed before this time (retry backoff).
    available_at     timestamptz NOT NULL DEFAULT now(),
    -- Fencing token of the current holder: every write by the holder checks it.
    lease_token      uuid,
    lease_expires_at timestamptz,
    worker_id        text,
    idempotency_key  text,
    request_hash     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CONSTRAINT runs_mode_valid CHECK (mode IN ('sync', 'async')),
    CONSTRAINT runs_status_valid CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled')),
    CONSTRAINT runs_attempts_valid CHECK (attempt >= 0 AND max_attempts >= 1),
    CONSTRAINT runs_finished_iff_final CHECK ((finished_at IS NOT NULL) = (status IN ('Succeeded', 'Failed', 'Cancelled'))),
    CONSTRAINT runs_running_has_lease CHECK (status <> 'Running' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT runs_idempotency_key_length CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    CONSTRAINT runs_workflow_idempotency_key UNIQUE (workflow_id, idempotency_key)
);

-- A workflow's run history, newest first.
CREATE INDEX runs_workflow_created_idx ON runs (workflow_id, created_at DESC, id);
-- The queue: only Pending rows, oldest available first.
CREATE INDEX runs_pending_queue_idx ON runs (available_at, created_at) WHERE status = 'Pending';
-- The expired-lease sweep: only Running rows.
CREATE INDEX runs_running_lease_idx ON runs (lease_expires_at) WHERE status = 'Running';

CREATE TABLE run_steps (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    run_id          uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- History outlives the node: deleting a node keeps its steps with node_id NULL.
    node_id         uuid        REFERENCES nodes (id) ON DELETE SET NULL,
    attempt         integer     NOT NULL,
    -- The node's position when the step ran: steps of one attempt run in this order.
    position        integer     NOT NULL,
    node_type       text        NOT NULL,
    config_snapshot jsonb       NOT NULL,
    status          text        NOT NULL,
    started_at      timestamptz,
    finished_at     timestamptz,
    input_text      text,
    output_text     text,
    error_message   text,
    -- What the executor wants a reader to know (provider, model, tokens, latency).
    note            text,
    CONSTRAINT run_steps_status_valid CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled')),
    CONSTRAINT run_steps_attempt_position_valid CHECK (attempt >= 1 AND position >= 0),
    -- Also serves "steps of a run in execution order".
    CONSTRAINT run_steps_run_attempt_position_key UNIQUE (run_id, attempt, position)
);

-- Serves ON DELETE SET NULL when a node is deleted.
CREATE INDEX run_steps_node_id_idx ON run_steps (node_id);

CREATE TABLE run_events (
    id        uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    run_id    uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt   integer     NOT NULL,
    -- The run's status after the transition.
    status    text        NOT NULL,
    -- clock_timestamp(), not now(): events written in one transaction keep their order.
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker_id text,
    note      text,
    CONSTRAINT run_events_status_valid CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled'))
);

CREATE INDEX run_events_run_at_idx ON run_events (run_id, at);
