// The connection the import's last transaction (validation, load and
// refresh: load.ts) runs on. Given the pool and the database's URL
// (ImportOptions.connectionUrl), a run that is not a dry run opens one of
// its own for it (RunContext.loadSessionUrl), and closes it at the end, so that it can give that
// session a large temp_buffers (IMPORT_TEMP_BUFFERS): validation and the
// load work through temporary tables of a million rows, and a pooled
// connection would keep that memory after the import. The connection is
// named and attributed like the run's own (application_name, the session's
// permgraph.actor), and the run's interruption cancels its statements too
// (RunContext.watchBackend). Otherwise the run's connection does it: without
// the URL; for a dry run (whose one transaction holds everything it
// staged); and when the caller gave a transaction or a connection rather
// than the pool (the load then stays in it, and cannot wait for locks the
// caller's own transaction holds).
import { IMPORT_TEMP_BUFFERS } from '../../constants.ts';
import { openPool, sql, type Queryable } from '../../db/pool.ts';
import type { RunContext, Step } from './types.ts';

export async function withLoadSession<T>(ctx: RunContext, conn: Queryable, step: Step, run: (step: Step) => Promise<T>): Promise<T> {
  const url = ctx.loadSessionUrl;
  if (url === null) return run(step);
  const [own] = await conn.query(sql`
    select current_setting('application_name') as application_name, current_setting('permgraph.actor', true) as actor`);
  const pool = openPool(url, { poolSize: 1, applicationName: String(own.application_name) });
  try {
    return await pool.task(async (session) => {
      const [{ pid }] = await session.query(sql`
        select set_config('temp_buffers', ${IMPORT_TEMP_BUFFERS}, false), set_config('permgraph.actor', ${own.actor ?? ''}, false),
               pg_backend_pid() as pid`);
      const unwatch = ctx.watchBackend(Number(pid));
      try {
        return await run((fn) => session.tx(fn));
      } finally {
        unwatch();
      }
    });
  } finally {
    await pool.dispose();
  }
}
