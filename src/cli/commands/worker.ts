import path from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_CHUNK_PAIRS, DEFAULT_MAX_BATCH, DEFAULT_POLL_INTERVAL_MS, DEFAULT_STANDBY_INTERVAL_MS } from '../../constants.ts'; // imports nothing: cheap for --help
import type { BatchResult } from '../../engine/apply.ts';
import type { Worker } from '../../worker/worker.ts';
import { action, ExitCode, intervalMs, portNumber, positiveInteger, requireSchema, withRightsHint } from '../action.ts';
import { onShutdownSignal, type CommandContext } from '../context.ts';

/** worker, dev. */
export function registerWorkerCommands(program: Command): void {
  program
    .command('worker')
    .description('apply captured changes as they are committed, until SIGINT/SIGTERM')
    .option('--once', 'apply every change committed before start, then exit')
    .option('--poll-interval <ms>', 'poll for changes at least this often (backstop for lost notifications)', String(DEFAULT_POLL_INTERVAL_MS))
    .option('--standby-interval <ms>', 'how often a standby worker tries to take over', String(DEFAULT_STANDBY_INTERVAL_MS))
    .option('--max-batch <n>', 'more pending changes than this are applied by one full recomputation', String(DEFAULT_MAX_BATCH))
    .option('--chunk-pairs <n>', 'a change whose region is larger than this many pairs becomes a long job, applied in chunks between batches (0: never)', String(DEFAULT_CHUNK_PAIRS))
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
        // The hint comes once the schema is there, so that what it suggests works.
        const ready = async () => {
          let where = `from ${ctx.database.origin}`;
          if (ctx.database.origin === 'embedded') {
            const { defaultDataDir, PORT_FILE } = await import('../../db/embedded.ts');
            const relative = path.relative(process.cwd(), defaultDataDir());
            const dir = relative === '' ? '.' : relative.startsWith('..') ? defaultDataDir() : relative;
            where = `embedded server, data in ${dir}/, port kept in ${path.join(dir, PORT_FILE)}`;
          }
          ctx.say(`permgraph: PostgreSQL at ${ctx.database.url} (${where})`);
          ctx.say(`  try:  psql "${ctx.database.url}"`);
          ctx.say(`        insert into permgraph.nodes (id, kind) values ('alice', 'user'), ('team', 'group');`);
          ctx.say(`        insert into permgraph.grants (tail_id, head_id, level) values ('alice', 'team', 2);`);
          ctx.say(`        select * from permgraph.effective_permissions;`);
          ctx.say('  Ctrl-C stops the worker (and the embedded server).');
        };
        await runWorker(ctx, { migrate: true, pollInterval: String(DEFAULT_POLL_INTERVAL_MS), standbyInterval: String(DEFAULT_STANDBY_INTERVAL_MS), maxBatch: String(DEFAULT_MAX_BATCH), chunkPairs: String(DEFAULT_CHUNK_PAIRS), listen: true, metricsPort: options.metricsPort }, ready);
      }, { logLevel: 'info' }),
    );
}

function describeBatch(result: BatchResult): string {
  if (result.mode === 'none') return 'nothing pending';
  return `${result.mode}: ${result.changes} change(s), ${result.inserted} inserted, ${result.updated} updated, ${result.deleted} deleted in ${result.ms.toFixed(1)} ms`;
}

interface WorkerFlags {
  once?: boolean;
  pollInterval: string;
  standbyInterval: string;
  maxBatch: string;
  chunkPairs: string;
  listen: boolean;
  metricsPort?: string;
  migrate?: boolean;
}

async function runWorker(ctx: CommandContext, flags: WorkerFlags, onSchemaReady?: () => Promise<void>): Promise<void> {
  // Loaded here, not at the top: registering the commands must not load the database driver.
  const [{ applyChanges, requirePrimary }, { applyJobChunk }, { migrate }, { Worker }] = await Promise.all([
    import('../../engine/apply.ts'),
    import('../../engine/long-job.ts'),
    import('../../migrations/migrate.ts'),
    import('../../worker/worker.ts'),
  ]);
  if (flags.once && flags.metricsPort !== undefined) throw new ExitCode(2, '--metrics-port has no use with --once, which exits after its batch');
  const metricsPort = flags.metricsPort === undefined ? undefined : portNumber(flags.metricsPort, '--metrics-port');
  if (flags.migrate) {
    await migrate(ctx.db, ctx.logger, { signal: ctx.interrupted }).catch((error: unknown) => {
      throw withRightsHint(error, 'worker --migrate');
    });
  }
  await requireSchema(ctx);
  await onSchemaReady?.();
  const maxBatch = positiveInteger(flags.maxBatch, '--max-batch');
  const chunkPairs = flags.chunkPairs === '0' ? null : positiveInteger(flags.chunkPairs, '--chunk-pairs');
  if (flags.once) {
    await requirePrimary(ctx.db);
    // one batch, then the chunks of a long job (this batch's or an earlier worker's) until it is done
    const result = await applyChanges(ctx.db, { maxChanges: maxBatch });
    let chunks = 0;
    for (let job = result.longJobActive; job; chunks++) job = !(await applyJobChunk(ctx.db)).finished;
    if (ctx.options.json) ctx.emitJson({ ...result, longJobChunks: chunks });
    ctx.say(describeBatch(result) + (chunks ? `; finished a long job in ${chunks} chunk(s)` : ''));
    return;
  }
  const worker = new Worker({
    url: ctx.database.url,
    logger: ctx.logger,
    pollIntervalMs: intervalMs(flags.pollInterval, '--poll-interval'),
    standbyIntervalMs: intervalMs(flags.standbyInterval, '--standby-interval'),
    maxBatch,
    chunkPairs,
    listen: flags.listen,
  });
  const metricsServer = metricsPort === undefined ? undefined : await startMetrics(worker, ctx, metricsPort);
  if (metricsServer) ctx.logger.info({ port: metricsPort }, 'serving metrics at /metrics');
  // Handled from before start(): a signal while it connects stops the
  // worker as soon as it has started, instead of being taken for the
  // cancelling of a statement and leaving it running.
  const stopped = onShutdownSignal(ctx.logger, async () => {
    await worker.stop();
    metricsServer?.close();
  });
  // (it stops by itself only when it finds a transaction pooler after starting: Worker.failure)
  const stoppedItself = new Promise<void>((resolve) => worker.once('stopped', resolve));
  await worker.start();
  await Promise.race([stopped, stoppedItself]);
  metricsServer?.close();
  if (worker.failure) throw worker.failure;
  ctx.logger.info('worker stopped');
}


/** prom-client is loaded only when metrics are asked for: it adds a quarter second to every command's start. */
async function startMetrics(worker: Worker, ctx: CommandContext, port: number) {
  const { createWorkerMetrics, serveMetrics } = await import('../../worker/metrics.ts');
  try {
    return await serveMetrics(createWorkerMetrics(worker, ctx.db), port);
  } catch (error) {
    // (Node's "listen EADDRINUSE: address already in use 0.0.0.0:9464" names neither the flag nor what to do)
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') {
      throw new ExitCode(1, `--metrics-port ${port}: the port is in use on this host (another worker's metrics?): give each worker on a host a port of its own`, 'failed', { cause: error });
    }
    if (code === 'EACCES') throw new ExitCode(1, `--metrics-port ${port}: not allowed to listen on that port (below 1024 needs privileges): choose a port above 1023`, 'failed', { cause: error });
    throw error;
  }
}
