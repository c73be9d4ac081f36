-- permgraph 021: the listings return each item's valid_until (expiring
-- grants, docs/semantics.md). A function's result columns cannot change in
-- place: the two listings go here and sql/functions/120_listing.sql creates
-- them again with the new column last (the run re-grants their privileges,
-- 900_privileges.sql). Callers that name their columns are unaffected.
drop function if exists permgraph.list_targets(text, integer, text, text, integer);
drop function if exists permgraph.list_users(text, integer, text, integer);
