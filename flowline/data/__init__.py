"""The database: the pool and transaction helpers (db), the named queries of sql/*.sql (sql) and the yoyo
migrations of migrations/ (migrations). Every statement Flowline runs goes through db with a query name."""
