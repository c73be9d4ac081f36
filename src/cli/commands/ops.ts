import type cliProgress from 'cli-progress';
import type { Command } from 'commander';
import type { AuditAction } from '../../app/audit.ts';
import type { ImportProgress, ImportSource, ImportSummary, OnInvalid } from '../../app/import/index.ts';
import { AUDIT_ACTIONS, DEFAULT_AUDIT_LIMIT, DEFAULT_IMPORT_BATCH_SIZE, DEFAULT_IMPORT_MAX_PROBLEMS, DEFAULT_MAX_CONSUMER_LAG_SECONDS, DEFAULT_MAX_LAG_SECONDS } from '../../constants.ts';
import { action, actorOption, checkFlag, ExitCode, pageSize, positiveInteger, requireSchema } from '../action.ts';
import type { CommandContext } from '../context.ts';
import { EXIT } from '../errors.ts';
import { describeEntry } from '../format.ts';
import { exactMoments } from '../json.ts';

interface ImportFlags {
  nodes?: string;
  grants?: string;
  nodesQuery?: string;
  grantsQuery?: string;
  name?: string;
  resume?: boolean;
  restart?: boolean;
  dryRun?: boolean;
  exclusive?: boolean;
  onInvalid: string;
  batchSize: string;
  show: string;
  actor?: string;
}

interface PruneFlags {
  before?: string;
  olderThan?: string;
  dryRun?: boolean;
  actor?: string;
}

interface AuditFlags {
  actor?: string;
  login?: string;
  target?: string;
  source?: string;
  action?: string;
  since?: string;
  until?: string;
  limit: string;
  after?: string;
}

/** import, audit, prune-audit, doctor. */
export function registerOpsCommands(program: Command): void {
  program
    .command('import')
    .description('bulk-load nodes and grants from CSV files or SQL queries (resumable; one refresh at the end)')
    .option('--nodes <file>', 'CSV with header id,kind,owner_id[,trash_at]')
    .option('--grants <file>', 'CSV with header tail_id,head_id,level[,source][,expires_at]')
    .option('--nodes-query <sql>', 'one SELECT returning id, kind, owner_id [, trash_at]; runs read-only, name tables with their schema')
    .option('--grants-query <sql>', 'one SELECT returning tail_id, head_id, level [, source] [, expires_at]; runs read-only, name tables with their schema')
    .option('--name <name>', 'name of the run, for --resume (default: derived from the inputs)')
    .option('--resume', 'continue an interrupted run after its last committed batch')
    .option('--restart', 'discard an interrupted run of the same name and start over')
    .option('--dry-run', 'validate everything and report what would change; write nothing')
    .option('--exclusive', 'lock out readers too during the load, to check foreign keys once instead of row by row (faster for large imports unless run as a superuser)')
    .option('--on-invalid <mode>', 'fail: load nothing if any row is invalid (exit 1); skip: load the valid rows', 'fail')
    .option('--batch-size <n>', 'rows per committed staging batch', String(DEFAULT_IMPORT_BATCH_SIZE))
    .option('--show <n>', 'list at most n problems', String(DEFAULT_IMPORT_MAX_PROBLEMS))
    .addOption(actorOption())
    .action(action<ImportFlags>(program, (ctx, flags) => runImport(ctx, flags)));

  program
    .command('audit')
    .description('list the audit log of grant and ownership changes, oldest first (keyset pages)')
    .option('--actor <actor>', 'only changes by this actor (permgraph.actor, else the database role)')
    .option('--login <role>', 'only changes made by this database login, whatever actor it declared')
    .option('--target <id>', 'only changes about this node (as grant tail or head, or the node changed)')
    .option('--source <source>', 'only changes with this grant source (or import run name)')
    .option('--action <action>', `only this action: ${AUDIT_ACTIONS.join(', ')} (the last written by releases before 0.2 only)`)
    .option('--since <time>', 'only changes at or after this time (e.g. 2024-05-01T12:00:00Z)')
    .option('--until <time>', 'only changes before this time')
    .option('--limit <n>', 'at most n entries', String(DEFAULT_AUDIT_LIMIT))
    .option('--after <cursor>', 'entries after this cursor (printed at the end of a full page)')
    .action(action<AuditFlags>(program, (ctx, flags) => runAudit(ctx, flags)));

  program
    .command('prune-audit')
    .description("delete the audit log's entries before --before or older than --older-than (the schema's owner only; the prune itself is logged)")
    .option('--before <time>', 'delete the entries before this time (e.g. 2025-01-01T00:00:00Z)')
    .option('--older-than <duration>', "delete the entries older than this, back from the database's now (e.g. 365d, 90d12h)")
    .option('--dry-run', 'count the entries; delete nothing')
    .addOption(actorOption())
    .action(action<PruneFlags>(program, (ctx, flags) => runPruneAudit(ctx, flags)));

  program
    .command('doctor')
    .description('check the connection (pooler), schema version, indexes, settings, worker, backlog, change queue, change stream consumers and imports; exit 1 if any check fails')
    .option('--max-lag <seconds>', 'a pending change older than this is a warning', String(DEFAULT_MAX_LAG_SECONDS))
    .option('--max-consumer-lag <seconds>', 'a change stream consumer whose oldest unacknowledged event is older than this is a warning', String(DEFAULT_MAX_CONSUMER_LAG_SECONDS))
    .action(
      action<{ maxLag: string; maxConsumerLag: string }>(program, async (ctx, flags) => {
        const { runDoctor } = await import('../../app/doctor.ts'); // implementations load lazily: see core.ts
        const checks = await runDoctor(ctx.db, {
          maxLagSeconds: positiveInteger(flags.maxLag, '--max-lag'),
          maxConsumerLagSeconds: positiveInteger(flags.maxConsumerLag, '--max-consumer-lag'),
          url: ctx.database.url,
        });
        const failed = checks.filter((c) => c.status === 'fail');
        if (ctx.options.json) ctx.emitJson({ ok: failed.length === 0, checks });
        for (const c of checks) ctx.say(`${c.status.padEnd(4)}  ${c.name.padEnd(8)}  ${c.message}`);
        if (failed.length) throw new ExitCode(1, `${failed.length} check(s) failed: ${failed.map((c) => c.name).join(', ')}`, 'checks_failed');
      }),
    );
}

function source(file: string | undefined, query: string | undefined, what: string): ImportSource | undefined {
  if (file !== undefined && query !== undefined) throw new ExitCode(2, `give --${what} or --${what}-query, not both`);
  if (file !== undefined) return { file };
  if (query !== undefined) return { query };
  return undefined;
}

async function runImport(ctx: CommandContext, flags: ImportFlags): Promise<void> {
  const nodes = source(flags.nodes, flags.nodesQuery, 'nodes');
  const grants = source(flags.grants, flags.grantsQuery, 'grants');
  if (!nodes && !grants) throw new ExitCode(2, 'nothing to import: give --nodes/--nodes-query and/or --grants/--grants-query');
  if (flags.onInvalid !== 'skip' && flags.onInvalid !== 'fail') throw new ExitCode(2, `--on-invalid must be skip or fail, got "${flags.onInvalid}"`);
  const batchSize = positiveInteger(flags.batchSize, '--batch-size');
  const show = positiveInteger(flags.show, '--show');
  await requireSchema(ctx);
  const { describeProblem, ImportInterruptedError, ImportRejectedError, importGraph } = await import('../../app/import/index.ts');
  const progress = process.stderr.isTTY && !ctx.options.json ? progressBar((await import('cli-progress')).default) : null;
  // SIGINT/SIGTERM interrupt the run (the CLI's own handler leaves a command
  // that listens itself alone): the run's statement on the server is
  // cancelled, the run stays resumable, and the exit is 130/143; a second
  // signal exits at once.
  const exitOf = (signal: unknown) => (signal === 'SIGTERM' ? EXIT.sigterm : EXIT.sigint);
  const interrupt = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupt.signal.aborted) process.exit(exitOf(signal));
    interrupt.abort(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let summary: ImportSummary;
  try {
    summary = await importGraph(ctx.db, {
      nodes,
      grants,
      name: flags.name,
      resume: flags.resume,
      restart: flags.restart,
      dryRun: flags.dryRun,
      exclusive: flags.exclusive,
      connectionUrl: ctx.database.url,
      onInvalid: flags.onInvalid as OnInvalid,
      batchSize,
      maxProblems: show,
      actor: flags.actor,
      signal: interrupt.signal,
      onProgress: progress?.update,
    });
  } catch (error) {
    progress?.stop();
    if (error instanceof ImportRejectedError) {
      printSummary(ctx, error.summary, describeProblem);
      throw new ExitCode(1, error.message, 'invalid_input');
    }
    if (error instanceof ImportInterruptedError) throw new ExitCode(exitOf(error.reason), error.message, 'interrupted', { cause: error });
    throw error;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  progress?.stop();
  printSummary(ctx, summary, describeProblem);
  if (summary.dryRun && flags.onInvalid === 'fail' && summary.invalid > 0) {
    throw new ExitCode(
      1,
      `dry run: ${summary.invalid} invalid row(s); nothing would be loaded (first: ${describeProblem(summary.problems[0])}); pass --on-invalid skip to load the valid rows`,
      'invalid_input',
    );
  }
}

function printSummary(ctx: CommandContext, s: ImportSummary, describeProblem: (p: ImportSummary['problems'][number]) => string): void {
  if (ctx.options.json) return ctx.emitJson(s);
  const verb = s.dryRun ? 'dry run' : s.loaded ? 'loaded' : 'refused';
  ctx.say(`import ${s.name}: ${verb}${s.resumed ? ' (resumed)' : ''}`);
  for (const [table, c] of [['nodes', s.nodes], ['grants', s.grants]] as const) {
    const would = s.dryRun ? 'would be ' : '';
    const invalid = c.invalid === 0 ? '0 invalid' : `${c.invalid} invalid (${s.loaded || (s.dryRun && s.onInvalid === 'skip') ? 'skipped' : 'refused'})`;
    ctx.say(`  ${table.padEnd(6)}  ${c.read} read, ${invalid}; ${would}${c.inserted} new, ${c.updated} updated, ${c.unchanged} unchanged`);
  }
  if (s.refresh) ctx.say(`  refresh: ${s.refresh.inserted} permission row(s) inserted, ${s.refresh.updated} updated, ${s.refresh.deleted} deleted in ${s.refresh.ms.toFixed(0)} ms`);
  if (s.problems.length) {
    ctx.say(`problems (${s.problems.length < s.invalid ? `first ${s.problems.length} of ${s.invalid}` : s.invalid}):`);
    for (const p of s.problems) ctx.say(`  ${p.table} ${describeProblem(p)}`);
  }
}

/** A bar with rate and ETA per staging phase; validate and load have no known length, so they print one line. */
function progressBar(lib: typeof cliProgress): { update: (p: ImportProgress) => void; stop: () => void } {
  let bar: cliProgress.SingleBar | null = null;
  let phase: string | null = null;
  let started = 0;
  const stop = () => {
    bar?.stop();
    bar = null;
  };
  return {
    stop,
    update(p) {
      if (p.phase !== phase) {
        stop();
        phase = p.phase;
        started = performance.now();
        if (p.total === null) {
          process.stderr.write(`${p.phase}…\n`);
          return;
        }
        bar = new lib.SingleBar(
          {
            stream: process.stderr,
            format: `${p.phase.padEnd(6)} [{bar}] {percentage}% | {rows} rows | {rate} rows/s | ETA {eta_formatted}`,
            hideCursor: true,
          },
          lib.Presets.shades_classic,
        );
        bar.start(p.total, 0, { rows: 0, rate: 0 });
      }
      const seconds = (performance.now() - started) / 1000;
      bar?.update(p.done, { rows: p.rows, rate: seconds > 0 ? Math.round(p.rows / seconds) : 0 });
    },
  };
}

async function runAudit(ctx: CommandContext, flags: AuditFlags): Promise<void> {
  await requireSchema(ctx);
  const { listAudit } = await import('../../app/audit.ts');
  const limit = pageSize(flags.limit, '--limit');
  const after = flags.after === undefined ? undefined : positiveInteger(flags.after, '--after');
  const page = await listAudit(ctx.db, {
    actor: flags.actor,
    login: flags.login,
    target: flags.target,
    source: flags.source,
    action: flags.action as AuditAction | undefined,
    since: flags.since,
    until: flags.until,
    after,
    limit,
  });
  if (ctx.options.json) return ctx.emitJson(exactMoments(page));
  if (page.entries.length === 0) ctx.say(after === undefined ? 'no audit entries match' : `no audit entries after ${after} match`);
  for (const entry of page.entries) ctx.say(describeEntry(entry));
  if (page.nextCursor !== null) ctx.say(`more: --after ${page.nextCursor}`);
}

async function runPruneAudit(ctx: CommandContext, flags: PruneFlags): Promise<void> {
  if ((flags.before === undefined) === (flags.olderThan === undefined)) throw new ExitCode(2, 'give --before or --older-than, one of the two');
  const { parseDuration, parseExactMoment } = await import('../../expiry.ts');
  if (flags.before !== undefined) checkFlag(() => parseExactMoment(flags.before, '--before', null));
  if (flags.olderThan !== undefined) checkFlag(() => parseDuration(flags.olderThan, '--older-than'));
  await requireSchema(ctx);
  const { pruneAudit } = await import('../../app/audit.ts');
  const when = flags.before === undefined ? { olderThan: flags.olderThan! } : { before: flags.before };
  const result = await pruneAudit(ctx.db, { ...when, dryRun: flags.dryRun === true, actor: flags.actor });
  if (ctx.options.json) return ctx.emitJson(exactMoments(result));
  const entries = `${result.entries.toLocaleString('en-US')} audit entr${result.entries === 1 ? 'y' : 'ies'} before ${result.beforeExact}`;
  ctx.say(result.dryRun ? `would prune ${entries}` : `pruned ${entries}`);
}
