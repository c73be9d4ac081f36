-- permgraph 051: an import's trash_at, like its expires_at, is a timestamp
-- with its offset; the one form check of both is _import_moment_form (its
-- current definition is in sql/functions/150_import.sql), which replaces
-- _import_expiry_form.
drop function if exists permgraph._import_expiry_form(text);
