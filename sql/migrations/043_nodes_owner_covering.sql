-- permgraph 043: nodes_owner_idx carries each child's kind and trash time.
-- The listings read the children of a user's owners by this index
-- (list_targets' rows plan: every child of hundreds of owners for one page)
-- and then each child's kind and trash_at, which were a heap fetch per
-- child; with them in the index the read is index-only on a vacuumed table
-- (org large's heaviest users: ~0.1 ms of a 1.5 ms first page). Same name,
-- key and predicate as before: only the included columns are new.
-- The new index is built before the old one is dropped: the build lets
-- readers of nodes through (it blocks writes to nodes), while DROP INDEX
-- locks the table against readers too until the upgrade commits, so it
-- comes after the build, not before it.
create index nodes_owner_covering_idx on permgraph.nodes (owner_id, id) include (kind, trash_at) where owner_id is not null;
drop index permgraph.nodes_owner_idx;
alter index permgraph.nodes_owner_covering_idx rename to nodes_owner_idx;
