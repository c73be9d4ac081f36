-- permgraph 025: listings choose among three plans (rows, scan, hash) with
-- _listing_plan, which also bounds how many of the user's rows are counted
-- (sql/functions/120_listing.sql); the two-plan chooser it replaces goes.
drop function if exists permgraph._listing_scans(bigint, bigint, double precision, double precision, integer);
