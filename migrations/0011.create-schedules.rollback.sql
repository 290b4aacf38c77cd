-- Drops schedules and runs' schedule_id and scheduled_for: every schedule is lost, and runs forget which schedule
-- and tick made them (the runs are kept). Roll back 0012 first (it indexes these columns).
ALTER TABLE runs DROP COLUMN scheduled_for, DROP COLUMN schedule_id;
DROP TABLE schedules;
