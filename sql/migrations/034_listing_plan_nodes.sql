-- permgraph 034: _listing_plan takes p_nodes (whether the candidates are the
-- nodes of list_targets, whose hash plan costs more per candidate than
-- list_rows'); the signature without it goes (sql/functions/120_listing.sql).
drop function if exists permgraph._listing_plan(bigint, boolean, bigint, boolean, double precision, double precision, integer);
