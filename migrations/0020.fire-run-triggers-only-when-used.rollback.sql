-- Puts runs_notify_finished and runs_queue_webhook_deliveries back as migrations 0010 and 0009 made them (every
-- finished run notifies and looks for subscriptions) and drops the webhooks triggers and the columns
-- runs.notify_finish, runs.webhooks_wanted and workflows.has_webhooks. No data is lost: the columns only repeat
-- what the webhooks table and the waiting requests know.

DROP TRIGGER runs_notify_finished ON runs;
CREATE TRIGGER runs_notify_finished
AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.status IN ('Succeeded', 'Failed', 'Cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION notify_run_finished();

DROP TRIGGER runs_queue_webhook_deliveries ON runs;
CREATE TRIGGER runs_queue_webhook_deliveries
AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.status IN ('Succeeded', 'Failed', 'Cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION queue_webhook_deliveries();

DROP TRIGGER webhooks_note_deleted ON webhooks;
DROP TRIGGER webhooks_note_enabled ON webhooks;
DROP TRIGGER webhooks_note_inserted ON webhooks;
DROP FUNCTION note_workflow_webhooks();

ALTER TABLE runs DROP COLUMN webhooks_wanted, DROP COLUMN notify_finish;
ALTER TABLE workflows DROP COLUMN has_webhooks;
