-- permgraph 052: one function names the problem of an import's staged
-- moment (trash_at, expires_at), _import_moment_problem, and one checks a
-- run's, _import_check_moments (their current definitions are in
-- sql/functions/150_import.sql); they replace these two, whose messages
-- they hold.
drop function if exists permgraph._import_moment_out_of_range(text, text, text);
drop function if exists permgraph._import_moment_without_offset(text, text);
