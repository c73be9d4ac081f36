import type { Command } from 'commander';
import { sql } from '../db/pool.ts';
import { applyChanges, refresh, type BatchResult } from '../engine/apply.ts';
import { check, parseLevel } from '../engine/check.ts';
import { verify } from '../engine/verify.ts';
import { migrate, schemaState } from '../migrations/migrate.ts';
import { createWorkerMetrics, serveMetrics } from '../worker/metrics.ts';
import { Worker } from '../worker/worker.ts';
import { onShutdownSignal, withContext, type CommandContext, type GlobalOptions } from './context.ts';

/** Thrown by commands that ran fine but must exit non-zero (e.g. verify found differences). */
export class ExitCode extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

type Action<O> = (context: CommandContext, options: O, args: string[]) => Promise<void>;

/** Wraps a command body: global options, database, cleanup. Daemons log at info by default, one-shot commands at warn. */
function action<O>(program: Command, run: Action<O>, defaults: { logLevel: string } = { logLevel: 'warn' }) {
  return async (...args: unknown[]) => {
    const command = args[args.length - 1] as Command;
    const options = command.opts() as O;
    const global = program.opts<GlobalOptions>();
    await withContext({ ...global, logLevel: global.logLevel ?? defaults.logLevel }, (context) => run(context, options, command.args));
  };
}

function describeBatch(result: BatchResult): string {
  if (result.mode === 'none') return 'nothing pending';
  return `${result.mode}: ${result.changes} change(s), ${result.inserted} inserted, ${result.updated} updated, ${result.deleted} deleted in ${result.ms.toFixed(1)} ms`;
}

export function registerCommands(program: Command): void {
  program
    .command('migrate')
    .description('create or upgrade the permgraph schema (idempotent, safe to run concurrently)')
    .action(
      action(program, async (ctx) => {
        const { applied } = await migrate(ctx.db, ctx.logger);
        if (ctx.options.json) ctx.emitJson({ applied });
        ctx.say(applied.length ? `applied ${applied.join(', ')}` : 'schema is up to date');
      }),
    );

  program
    .command('refresh')
    .description('recompute the whole permission table (writes only rows that differ)')
    .action(
      action(program, async (ctx) => {
        await requireSchema(ctx);
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
    .description('may USER act on TARGET at LEVEL (1|2|3 or read|write|manage)? prints yes/no; exit 0 either way')
    .argument('<user>')
    .argument('<target>')
    .argument('<level>')
    .action(
      action(program, async (ctx, _options, [user, target, level]) => {
        await requireSchema(ctx);
        const allowed = await check(ctx.db, user!, target!, parseLevel(level!));
        if (ctx.options.json) ctx.emitJson({ user, target, level: parseLevel(level!), allowed });
        ctx.say(allowed ? 'yes' : 'no');
      }),
    );

  program
    .command('status')
    .description('pending changes, age of the oldest, last applied batch, and the active worker')
    .action(
      action(program, async (ctx) => {
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

  program
    .command('worker')
    .description('apply captured changes as they are committed, until SIGINT/SIGTERM')
    .option('--once', 'apply every change committed before start, then exit')
    .option('--poll-interval <ms>', 'poll for changes at least this often (backstop for lost notifications)', '1000')
    .option('--standby-interval <ms>', 'how often a standby worker tries to take over', '1000')
    .option('--max-batch <n>', 'more pending changes than this are applied by one full recomputation', '10000')
    .option('--no-listen', 'do not LISTEN; rely on polling only')
    .option('--metrics-port <port>', 'serve Prometheus metrics on this port at /metrics')
    .option('--migrate', 'run migrations first')
    .action(action<WorkerFlags>(program, (ctx, options) => runWorker(ctx, options), { logLevel: 'info' }));

  program
    .command('dev')
    .description('the main job on a laptop: migrate, print the connection string, run the worker')
    .option('--metrics-port <port>', 'serve Prometheus metrics on this port at /metrics')
    .action(
      action<{ metricsPort?: string }>(program, async (ctx, options) => {
        ctx.say(`permgraph: PostgreSQL at ${ctx.database.url} (${ctx.database.origin === 'embedded' ? 'embedded server, data in .permgraph/' : 'from ' + ctx.database.origin})`);
        ctx.say(`  try:  psql "${ctx.database.url}"`);
        ctx.say(`        insert into permgraph.nodes (id, kind) values ('alice', 'user'), ('team', 'group');`);
        ctx.say(`        insert into permgraph.grants (tail_id, head_id, level) values ('alice', 'team', 2);`);
        ctx.say(`        select * from permgraph.permissions;`);
        ctx.say('  Ctrl-C stops the worker (and the embedded server).');
        await runWorker(ctx, { migrate: true, pollInterval: '1000', standbyInterval: '1000', maxBatch: '10000', listen: true, metricsPort: options.metricsPort });
      }, { logLevel: 'info' }),
    );
}

interface WorkerFlags {
  once?: boolean;
  pollInterval: string;
  standbyInterval: string;
  maxBatch: string;
  listen: boolean;
  metricsPort?: string;
  migrate?: boolean;
}

async function runWorker(ctx: CommandContext, flags: WorkerFlags): Promise<void> {
  if (flags.migrate) await migrate(ctx.db, ctx.logger);
  await requireSchema(ctx);
  const maxBatch = positiveInteger(flags.maxBatch, '--max-batch');
  if (flags.once) {
    const result = await applyChanges(ctx.db, { maxChanges: maxBatch });
    if (ctx.options.json) ctx.emitJson(result);
    ctx.say(describeBatch(result));
    return;
  }
  const worker = new Worker({
    url: ctx.database.url,
    logger: ctx.logger,
    pollIntervalMs: positiveInteger(flags.pollInterval, '--poll-interval'),
    standbyIntervalMs: positiveInteger(flags.standbyInterval, '--standby-interval'),
    maxBatch,
    listen: flags.listen,
  });
  const metricsServer =
    flags.metricsPort === undefined
      ? undefined
      : await serveMetrics(createWorkerMetrics(worker, ctx.db), positiveInteger(flags.metricsPort, '--metrics-port'));
  if (metricsServer) ctx.logger.info({ port: flags.metricsPort }, 'serving metrics at /metrics');
  await worker.start();
  await onShutdownSignal(ctx.logger, async () => {
    await worker.stop();
    metricsServer?.close();
  });
  ctx.logger.info('worker stopped');
}

async function requireSchema(ctx: CommandContext): Promise<void> {
  const { state, pending } = await schemaState(ctx.db);
  if (state === 'missing') throw new ExitCode(1, 'permgraph schema not found in this database: run `permgraph migrate` first');
  if (state === 'behind') throw new ExitCode(1, `permgraph schema is behind this package (pending: ${pending.join(', ')}): run \`permgraph migrate\``);
  if (state === 'ahead') throw new ExitCode(1, 'permgraph schema is newer than this package: upgrade permgraph');
}

function positiveInteger(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new ExitCode(2, `${flag} must be a positive integer, got "${value}"`);
  return n;
}
