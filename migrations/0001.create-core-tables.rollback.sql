-- Drops Flowline's core tables. DATA IS LOST: every workflow, node, run, step and event is deleted.

DROP TABLE run_events;
DROP TABLE run_steps;
DROP TABLE runs;
DROP TABLE nodes;
DROP TABLE workflows;
