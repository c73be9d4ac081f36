-- permgraph 039: a split queue alternates its parts (sql/functions/045_batch_split.sql):
-- applier_state remembers which part the last batch took, so that the next
-- split takes the other and additions are not left pending for good behind a
-- steady stream of removals. _batch_part() replaces _batch_takes_removals_only()
-- and _split_batch() replaces _take_removals_first().
alter table permgraph.applier_state add column last_batch_part text
  constraint applier_state_last_batch_part_check check (last_batch_part in ('removals', 'additions'));
drop view if exists permgraph._batch_changes;
drop function if exists permgraph._batch_takes_removals_only();
drop function if exists permgraph._take_removals_first(bigint);
