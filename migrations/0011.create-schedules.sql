-- Creates schedules (cron-triggered runs of a workflow, fired by the workers) and gives runs schedule_id and
-- scheduled_for: which schedule made a run, and for which tick.
-- Rollback (0011.create-schedules.rollback.sql) drops them: every schedule is lost, and runs forget which schedule
-- and tick made them (the runs themselves are kept).
--
-- For DBAs: both new runs columns are nullable without a default, so adding them changes only the catalog (no
-- rewrite of runs, a brief ACCESS EXCLUSIVE lock). The foreign key is added NOT VALID (no scan of runs here, every
-- existing row is NULL anyway) and validated by 0012, which also builds the runs indexes CONCURRENTLY.
CREATE TABLE schedules (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id     uuid        NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    -- Five fields or a name such as @daily, checked by the service (flowline/core/cron.py).
    cron            text        NOT NULL,
    -- An IANA name; the ticks are found in this zone's wall-clock time.
    timezone        text        NOT NULL DEFAULT 'UTC',
    input_text      text        NOT NULL DEFAULT '',
    -- A deleted file leaves the schedule firing without a file (like a run whose file_id is not given): the
    -- schedule shows file_id null, so the change is visible; refusing the file's delete would instead make every
    -- file a schedule names undeletable.
    file_id         uuid        REFERENCES files (id) ON DELETE SET NULL,
    overlap         text        NOT NULL DEFAULT 'skip',
    catchup         text        NOT NULL DEFAULT 'last',
    enabled         boolean     NOT NULL DEFAULT true,
    -- The next tick to decide; NULL while disabled (re-enabling starts from then).
    next_fire_at    timestamptz,
    -- Ticks not fired because of the overlap policy (skip), and the latest of them.
    skipped_count   integer     NOT NULL DEFAULT 0,
    last_skipped_at timestamptz,
    last_fired_at   timestamptz,
    -- The latest run it made (what the overlap policy looks at); NULL once that run is deleted.
    last_run_id     uuid        REFERENCES runs (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    version         integer     NOT NULL DEFAULT 1,
    CONSTRAINT schedules_cron_length CHECK (char_length(cron) BETWEEN 1 AND 200),
    CONSTRAINT schedules_timezone_length CHECK (char_length(timezone) BETWEEN 1 AND 64),
    CONSTRAINT schedules_overlap_valid CHECK (overlap IN ('skip', 'queue', 'cancel_previous')),
    CONSTRAINT schedules_catchup_valid CHECK (catchup IN ('none', 'last', 'all')),
    CONSTRAINT schedules_enabled_has_next CHECK (enabled = (next_fire_at IS NOT NULL)),
    CONSTRAINT schedules_skipped_count_valid CHECK (skipped_count >= 0)
);
-- The workers' poll: the due schedules, oldest tick first, one index scan however many schedules there are.
CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE enabled;
-- GET /workflows/{id}/schedules' order (and a workflow's delete cascading here).
CREATE INDEX schedules_workflow_idx ON schedules (workflow_id, created_at DESC, id);
-- A deleted run sets last_run_id NULL (prune-runs deletes many).
CREATE INDEX schedules_last_run_idx ON schedules (last_run_id) WHERE last_run_id IS NOT NULL;

ALTER TABLE runs ADD COLUMN schedule_id uuid, ADD COLUMN scheduled_for timestamptz;
ALTER TABLE runs
    ADD CONSTRAINT runs_schedule_id_fkey FOREIGN KEY (schedule_id) REFERENCES schedules (id) ON DELETE SET NULL
    NOT VALID;
