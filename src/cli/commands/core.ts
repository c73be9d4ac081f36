import type { Command } from 'commander';
import { action, ExitCode, requireSchema } from '../action.ts';

// The implementations are imported inside each action, so that registering the
// commands (and `permgraph --help`) loads no database driver.

/** migrate, refresh, verify, check, status. */
export function registerCoreCommands(program: Command): void {
  program
    .command('migrate')
    .description('create or upgrade the permgraph schema (idempotent, safe to run concurrently)')
    .action(
      action(program, async (ctx) => {
        const { migrate } = await import('../../migrations/migrate.ts');
        const { applied, functions } = await migrate(ctx.db, ctx.logger);
        if (ctx.options.json) ctx.emitJson({ applied, functions });
        const changed = [...applied, ...functions.map((name) => `functions/${name}`)];
        ctx.say(changed.length ? `applied ${changed.join(', ')}` : 'schema is up to date');
      }),
    );

  program
    .command('refresh')
    .description('recompute the whole permission table (writes only rows that differ)')
    .action(
      action(program, async (ctx) => {
        await requireSchema(ctx);
        const { refresh } = await import('../../engine/apply.ts');
        const result = await refresh(ctx.db);
        if (ctx.options.json) ctx.emitJson(result);
        ctx.say(`refreshed: ${result.inserted} inserted, ${result.updated} updated, ${result.deleted} deleted in ${result.ms.toFixed(1)} ms`);
      }),
    );

  program
    .command('verify')
    .description('compare the table with a full recomputation; exit 1 and list differences if any')
    .option('--limit <n>', 'print at most n differences', '50')
    .action(
      action<{ limit: string }>(program, async (ctx, options) => {
        await requireSchema(ctx);
        const { verify } = await import('../../engine/verify.ts');
        const { differences, pendingChanges } = await verify(ctx.db);
        if (ctx.options.json) ctx.emitJson({ differences, pendingChanges });
        for (const d of differences.slice(0, Number(options.limit))) {
          ctx.say(`${d.relation} ${d.key}: stored ${d.stored}, expected ${d.expected}`);
        }
        if (differences.length > Number(options.limit)) ctx.say(`… and ${differences.length - Number(options.limit)} more`);
        const pendingNote = pendingChanges ? ` (${pendingChanges} change(s) pending: is a worker running?)` : '';
        if (differences.length) throw new ExitCode(1, `${differences.length} difference(s) from a full recomputation${pendingNote}`);
        ctx.say(`ok: the table equals a full recomputation${pendingNote}`);
      }),
    );

  program
    .command('check')
    .description('may USER act on TARGET at LEVEL (1|2|3, read|write|manage) or for an OPERATION of the catalog? prints yes/no; exit 0 either way')
    .argument('<user>')
    .argument('<target>')
    .argument('<level-or-operation>')
    .action(
      action(program, async (ctx, _options, [user, target, asked]) => {
        await requireSchema(ctx);
        const { checkAccess } = await import('../../app/access.ts');
        const answer = await checkAccess(ctx.db, user!, target!, asked!); // { level | operation, allowed }
        if (ctx.options.json) ctx.emitJson({ user, target, ...answer });
        ctx.say(answer.allowed ? 'yes' : 'no');
      }),
    );

  program
    .command('status')
    .description('pending changes, age of the oldest, last applied batch, and the active worker')
    .action(
      action(program, async (ctx) => {
        const [{ schemaState }, { sql }] = await Promise.all([import('../../migrations/migrate.ts'), import('../../db/pool.ts')]);
        const schema = await schemaState(ctx.db);
        if (schema.state === 'missing') throw new ExitCode(1, 'permgraph schema not found: run `permgraph migrate`');
        const [row] = await ctx.db.query(sql`select permgraph.status() as status`);
        const status = { schema: schema.state, ...row.status };
        if (ctx.options.json) return ctx.emitJson(status);
        ctx.say(`schema:           ${schema.state}${schema.pending.length ? ` (pending: ${schema.pending.join(', ')})` : ''}`);
        ctx.say(`pending changes:  ${status.pending_changes}`);
        ctx.say(`oldest pending:   ${status.oldest_pending_age_s == null ? '-' : `${Number(status.oldest_pending_age_s).toFixed(1)} s ago`}`);
        const last = status.last_batch;
        ctx.say(`last batch:       ${last?.last_batch_at ? `${last.last_batch_mode}, ${last.last_batch_changes} change(s), ${Number(last.last_batch_ms).toFixed(1)} ms, at ${last.last_batch_at}` : 'never'}`);
        ctx.say(`worker:           ${status.worker ? `active (backend pid ${status.worker.pid}, ${status.worker.application_name}, from ${status.worker.client_addr ?? 'local socket'}, since ${status.worker.since})` : 'none holds the applier role'}`);
        ctx.say(`permission rows:  ${status.permission_rows}`);
      }),
    );

}
