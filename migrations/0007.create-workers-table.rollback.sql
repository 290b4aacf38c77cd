-- Drops workers: the recorded worker heartbeats are lost (GET /metrics then shows none); runs are not touched.

DROP TABLE workers;
