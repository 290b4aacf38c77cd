-- Drops the view run_list. No data is lost (a view holds none); the list queries of sql/runs.sql then fail until
-- the code that reads them is rolled back too.

DROP VIEW run_list;
