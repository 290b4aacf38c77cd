-- Puts runs_hold_inserted, runs_hold_requeued and runs_release_on_status back as migration 0016 made them (they
-- fire for every async run again) and drops runs.limited. No data is lost: the column only repeated what the
-- runs' keys and their workflows' limits say.

DROP TRIGGER runs_release_on_status ON runs;
CREATE TRIGGER runs_release_on_status
AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND OLD.status IS DISTINCT FROM NEW.status
      AND (OLD.status IN ('Pending', 'Running') OR NEW.status = 'Running'))
EXECUTE FUNCTION release_held_runs();

DROP TRIGGER runs_hold_requeued ON runs;
CREATE TRIGGER runs_hold_requeued
BEFORE UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND OLD.status = 'Running' AND NEW.status = 'Pending')
EXECUTE FUNCTION hold_pending_run();

DROP TRIGGER runs_hold_inserted ON runs;
CREATE TRIGGER runs_hold_inserted
BEFORE INSERT ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND NEW.status = 'Pending')
EXECUTE FUNCTION hold_pending_run();

ALTER TABLE runs DROP COLUMN limited;
