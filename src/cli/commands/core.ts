import type { Command } from 'commander';
import { action, ExitCode, positiveInteger, requireSchema, schemaNotFound } from '../action.ts';
import { EXIT } from '../errors.ts';
import { workerConnection } from '../format.ts';
import { camelCaseKeys } from '../json.ts';

// The implementations are imported inside each action, so that registering the
// commands (and `permgraph --help`) loads no database driver.

/** migrate, refresh, verify, check, status. */
export function registerCoreCommands(program: Command): void {
  program
    .command('migrate')
    .description('create or upgrade the permgraph schema (idempotent, safe to run concurrently)')
    .option('--overwrite-unknown-functions', "apply this package's function files over versions it never had (a development checkout's own edits; never over a newer release)")
    .action(
      action<{ overwriteUnknownFunctions?: boolean }>(program, async (ctx, flags) => {
        const { migrate } = await import('../../migrations/migrate.ts');
        const { applied, functions, rights } = await migrate(ctx.db, ctx.logger, { signal: ctx.interrupted, overwriteUnknownFunctions: flags.overwriteUnknownFunctions });
        if (ctx.options.json) ctx.emitJson({ applied, functions, rights });
        const changed = [...applied, ...functions.map((name) => `functions/${name}`)];
        if (rights.length) ctx.say(`granted the roles their missing rights (${rights.length}): ${rights.slice(0, 3).join('; ')}${rights.length > 3 ? '; …' : ''}`);
        else ctx.say(changed.length ? `applied ${changed.join(', ')}` : 'schema is up to date');
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
        const limit = positiveInteger(options.limit, '--limit');
        await requireSchema(ctx);
        const { verify } = await import('../../engine/verify.ts');
        const { differences, pendingChanges } = await verify(ctx.db);
        if (ctx.options.json) ctx.emitJson({ differences, pendingChanges });
        for (const d of differences.slice(0, limit)) {
          ctx.say(`${d.relation} ${d.key}: stored ${d.stored}, expected ${d.expected}`);
        }
        if (differences.length > limit) ctx.say(`… and ${differences.length - limit} more`);
        const pendingNote = pendingChanges ? ` (${pendingChanges} change(s) pending: is a worker running?)` : '';
        if (differences.length) throw new ExitCode(1, `${differences.length} difference(s) from a full recomputation${pendingNote}`, 'differences');
        ctx.say(`ok: the table equals a full recomputation${pendingNote}`);
      }),
    );

  program
    .command('check')
    .description('may USER act on TARGET at LEVEL or for an OPERATION of the catalog? prints yes/no (exit status 0 yes, 3 no)')
    .argument('<user>', 'the user (a node of kind user)')
    .argument('<target>', 'the node asked about')
    .argument('<level-or-operation>', '1|2|3, read|write|manage, or an operation of the catalog (e.g. document.edit)')
    .addHelpText('after', '\nExit status: 0 allowed; 3 denied; 1 error (e.g. an unknown user, target, level or operation); 2 usage error.\nWith --json the answer is printed either way: {"user", "target", "level" or "operation", "allowed"}.')
    .action(
      action(program, async (ctx, _options, [user, target, asked]) => {
        await requireSchema(ctx);
        const { checkAccess, requireUserAndTarget } = await import('../../app/access.ts');
        await requireUserAndTarget(ctx.db, user!, target!);
        const answer = await checkAccess(ctx.db, user!, target!, asked!); // { level | operation, allowed }
        if (ctx.options.json) ctx.emitJson({ user, target, ...answer });
        ctx.say(answer.allowed ? 'yes' : 'no');
        // Denied is an answer, not a failure: a status of its own for scripts, and nothing on stderr.
        if (!answer.allowed) throw new ExitCode(EXIT.denied, '', 'denied');
      }),
    );

  program
    .command('status')
    .description('pending changes, age of the oldest, last applied batch, the active worker, a long job\'s progress, and the change stream\'s consumers')
    .action(
      action(program, async (ctx) => {
        const [{ schemaState }, { readStatus }] = await Promise.all([import('../../migrations/migrate.ts'), import('../../app/status.ts')]);
        const schema = await schemaState(ctx.db);
        if (schema.state === 'missing') throw schemaNotFound(ctx);
        // (its moments in UTC to the microsecond already; permgraph.status() speaks SQL's snake_case, the command line camelCase)
        const status = camelCaseKeys({ schema: schema.state, ...(await readStatus(ctx.db)) }) as Record<string, any>;
        if (ctx.options.json) return ctx.emitJson(status);
        ctx.say(`schema:           ${schema.state}${schema.pending.length ? ` (${schema.state === 'modified' ? 'changed' : 'pending'}: ${schema.pending.join(', ')})` : ''}`);
        ctx.say(`pending changes:  ${status.pendingChanges}`);
        ctx.say(`oldest pending:   ${status.oldestPendingAgeS == null ? '-' : `${Number(status.oldestPendingAgeS).toFixed(1)} s ago`}`);
        const last = status.lastBatch;
        ctx.say(`last batch:       ${last?.lastBatchAt ? `${last.lastBatchMode}, ${last.lastBatchChanges} change(s), ${Number(last.lastBatchMs).toFixed(1)} ms, at ${last.lastBatchAt}` : 'never'}`);
        const squatter = status.worker?.mayApply === false ? ', which may not apply changes: see blocking' : '';
        ctx.say(`worker:           ${status.worker ? `active (backend pid ${status.worker.pid}, ${status.worker.applicationName}, ${workerConnection(status.worker)}${squatter})` : 'none holds the applier role'}`);
        for (const s of status.blockingSessions ?? []) {
          const why = s.mayApply === true ? `, ${s.state}` : ' and may not apply changes'; // (listed: may not apply, or idle in a transaction)
          ctx.say(`blocking:         backend pid ${s.pid} (role ${s.role}, "${s.applicationName}") holds ${s.lock === 'role' ? "the applier role's lock" : "a batch's lock"}${why}: batches wait for it`);
        }
        if (status.restoredFromAnotherCluster) ctx.say('restored:         from another cluster (a logical backup restored here, or pg_upgrade); the next batch takes its state as this cluster\'s');
        ctx.say(`permission rows:  ${status.permissionRows}${status.permissionsMissing ? ' (missing: the graph has users; the next batch, or `permgraph refresh`, recomputes the table)' : ''}`);
        const job = status.longJob;
        if (job) {
          // (backlogChanges and released are absent from an older schema's status())
          const backlog = job.backlogChanges ? `, ${job.backlogChanges} of them a backlog` : '';
          const released = job.released === undefined ? '' : `, ${job.released} let go before its end`;
          const progress = `${job.usersDone}/${job.usersTotal} users, ${job.chunks} chunk(s), ${job.changes} change(s)${backlog} (+${job.deferred} waiting for it)${released}`;
          ctx.say(`long job:         ${job.finishedAt ? `last one finished at ${job.finishedAt} (${job.endedBy}), ${progress}` : `running since ${job.startedAt}, ${progress}`}`);
        }
        const consumers: Record<string, any>[] | undefined = status.changeConsumers; // (absent from the status() of an older schema)
        ctx.say(`change stream:    ${consumers === undefined ? 'not shown by this schema (run `permgraph migrate`)' : consumers.length === 0 ? 'no consumers' : `${consumers.length} consumer(s)`}`);
        for (const c of consumers ?? []) {
          const oldest = c.oldestWaitingAgeS == null ? '' : `, the oldest waiting ${Number(c.oldestWaitingAgeS).toFixed(1)} s`;
          ctx.say(`  ${c.consumer}${c.ownerRole ? ` (${c.ownerRole})` : ''}: ${c.lagEvents} event(s) behind${oldest}, acknowledged up to seq ${c.ackedSeq}`);
        }
      }),
    );

}
