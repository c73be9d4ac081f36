-- permgraph 011: an index for paths entering a node from groups.
--
-- A region recompute (sql/005, redefined in sql/012) asks, per region pair, which groups have an
-- edge into the target. edges_head_idx answers by visiting every in-edge,
-- and a team's in-edges are mostly its members (users): thousands of heap
-- visits per probe on a big team, to find the few group edges. This partial
-- index holds only group-tailed edges (few next to memberships), with what
-- the walk reads, so the probe is an index-only scan of exactly those.
create index if not exists edges_group_in_idx
  on permgraph.edges (head_id) include (tail_id, level, head_kind)
  where tail_kind = 'group';
