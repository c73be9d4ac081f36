-- permgraph 047: _explain_tree takes a third argument (how long the edges it
-- may take must last, so that explain() can show a path that holds as long
-- as its answer does). Its new definition is in sql/functions/130_explain.sql;
-- the two-argument one is dropped here, since a call with two arguments
-- would match both.
drop function if exists permgraph._explain_tree(text, integer);
