-- permgraph 044: an index on trashed_groups' trash times. The trash rule
-- (sql/functions/030_trash.sql), list_rows and the access predicate ask
-- once per statement whether any group is trashed now, and probe
-- trashed_groups per row only if one is. They ask for the earliest trash
-- time, which this index gives in one descent whatever the table holds
-- (groups whose trash is scheduled for later included), where a read of
-- the table would cost every statement its size.
create index trashed_groups_trash_at_idx on permgraph.trashed_groups (trash_at);
