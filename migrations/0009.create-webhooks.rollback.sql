-- Drops webhooks, webhook_deliveries and the trigger on runs that fills the outbox: every subscription, its
-- secret and the whole delivery history are lost; runs are not touched.

DROP TRIGGER runs_queue_webhook_deliveries ON runs;
DROP FUNCTION queue_webhook_deliveries();
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
