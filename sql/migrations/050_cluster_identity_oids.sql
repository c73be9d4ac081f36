-- permgraph 050: whether the oids stored with the state still name the same
-- objects in another cluster. pg_upgrade makes a new cluster (initdb: a new
-- system identifier) but keeps every oid, each role's and relation's (and,
-- from PostgreSQL 15 on, the database's), with the transaction ids; a
-- logical backup restored elsewhere keeps none of them. The oids of this
-- database and of this table when the row was recorded tell one from the
-- other: a change consumer's owner (an oid) is the same role after
-- pg_upgrade, renamed or not, and is found by its name after a logical
-- restore (sql/functions/048_cluster_identity.sql).
alter table permgraph.cluster_identity add column if not exists database_oid oid;
alter table permgraph.cluster_identity add column if not exists relation_oid oid;
-- A row recorded in this cluster: its oids are this database's. (One from
-- another cluster stays without: as before, its consumers are found by name.)
update permgraph.cluster_identity i
set database_oid = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database()),
    relation_oid = 'permgraph.cluster_identity'::pg_catalog.regclass
where i.system_identifier = (select c.system_identifier from pg_catalog.pg_control_system() c);
