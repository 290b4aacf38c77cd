-- Drops the partition upkeep (the view history_partitions and its two functions); no data is lost.

DROP FUNCTION make_history_partition(timestamptz, text);
DROP FUNCTION attach_history_partition(regclass, timestamptz, timestamptz);
DROP VIEW history_partitions;
