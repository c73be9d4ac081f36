-- Views over the materialized table: what applications should read.
-- The current definition of these views: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- The permission rows that count now: permgraph.permissions without the rows
-- of nodes deleted since the worker's last batch (permgraph.deleted_nodes;
-- the worker removes those rows, and a node re-created with the same id must
-- not inherit them meanwhile). Every read function reads through this view,
-- and so should applications' own joins.
create or replace view permgraph.effective_permissions as
  select p.user_id, p.target_id, p.level, p.traverse_owned
  from permgraph.permissions p
  where not exists (select 1 from permgraph.deleted_nodes d where d.id = p.user_id)
    and not exists (select 1 from permgraph.deleted_nodes d where d.id = p.target_id);
