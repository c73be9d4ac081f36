// Writers' cost of capture: one INSERT of 100,000 grants into
// permgraph.grants (row validation, then per-statement edge upkeep, change
// capture and audit) against the same INSERT into a plain table with the
// same columns, constraints and indexes and no triggers, side by side, each
// rolled back so both start from the same state. The clock stops once the
// deferred constraints are checked (`set constraints all immediate`): the
// grants' foreign keys are deferred to commit, and a rolled-back insert
// never checks them, while the plain table checks its own in the INSERT.
// A third variant, permgraph.grants with the audit log off (as the schema's
// owner may), says what the audit rows cost and what capture costs alone.
//   npm run bench -- --capture          (or: npx tsx bench/measure/capture.ts)
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbedded } from '../../src/db/embedded.ts';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { progress, say } from '../lib/progress.ts';
import { postgresInfo, type PostgresInfo } from '../lib/environment.ts';
import { TMP_DIR } from '../lib/server.ts';
import { round, summarize, type Summary } from '../lib/stats.ts';

const GRANTS = 100_000;
const USERS = 20_000;
const GROUPS = 2_000;
const ROUNDS = 5;

export interface CaptureResult {
  grants: number;
  /** One INSERT … SELECT of `grants` rows, ms. */
  permgraph: Summary;
  plainTable: Summary;
  /** permgraph median / plain table median. */
  ratio: number;
  /** permgraph.grants with `permgraph.audit = off`: capture without the audit rows (absent in older results). */
  withoutAudit?: Summary;
  /** withoutAudit median / plain table median. */
  ratioWithoutAudit?: number;
  /**
   * Whether each timing includes the deferred constraint checks. Runs before
   * this field stopped the clock after the INSERT: the grants' foreign keys
   * (deferred to commit) were never checked, the plain table's were.
   */
  deferredChecksTimed?: boolean;
  /** The server it ran on (one of its own, settings below: not the main runs'); absent in older results. */
  server?: PostgresInfo;
  /** Every sample in the order taken (ms), rounds alternating the three; absent in older results. */
  raw?: Record<Variant, number[]>;
}

class Rollback extends Error {}

type Variant = 'permgraph' | 'withoutAudit' | 'plainTable';

async function timedInsert(db: ConnectionPool, variant: Variant): Promise<number> {
  let elapsed = 0;
  await db
    .tx(async (tx) => {
      const target = variant === 'plainTable' ? sql`public.grants_plain` : sql`permgraph.grants`;
      if (variant === 'withoutAudit') await tx.query(sql`set local permgraph.audit = off`);
      const started = performance.now();
      await tx.query(sql`
        insert into ${target} (tail_id, head_id, level, source)
        select 'u' || (i % ${USERS}), 'g' || (i % ${GROUPS}), 1 + i % 3, 'b' || (i / ${USERS})
        from generate_series(0, ${GRANTS - 1}) i`);
      await tx.query(sql`set constraints all immediate`);
      elapsed = performance.now() - started;
      throw new Rollback();
    })
    .catch((error: unknown) => {
      if (!(error instanceof Rollback)) throw error;
    });
  return elapsed;
}

export async function measureCapture(): Promise<CaptureResult> {
  const dataDir = path.join(TMP_DIR, 'pgdata-capture');
  await rm(dataDir, { recursive: true, force: true });
  const server = await startEmbedded({ dataDir, settings: { jit: 'off' } });
  const db = openPool(server.url, { poolSize: 1, applicationName: 'permgraph-bench' });
  try {
    await migrate(db);
    await db.query(sql`
      insert into permgraph.nodes (id, kind) select 'u' || i, 'user' from generate_series(0, ${USERS - 1}) i;
      insert into permgraph.nodes (id, kind) select 'g' || i, 'group' from generate_series(0, ${GROUPS - 1}) i;
      select permgraph.refresh();
      create table public.grants_plain (like permgraph.grants including defaults including constraints including indexes);
      alter table public.grants_plain
        add foreign key (tail_id) references permgraph.nodes (id) on delete cascade,
        add foreign key (head_id) references permgraph.nodes (id) on delete cascade;
      analyze`);
    const info = await postgresInfo(db);
    const times: Record<Variant, number[]> = { plainTable: [], permgraph: [], withoutAudit: [] };
    const bar = progress(`capture: ${ROUNDS} rounds of 3 inserts of ${GRANTS.toLocaleString('en-US')} grants`, ROUNDS * 3);
    for (let i = 0; i < ROUNDS; i++) {
      for (const variant of ['plainTable', 'permgraph', 'withoutAudit'] as const) {
        times[variant].push(await timedInsert(db, variant));
        bar.tick();
      }
    }
    bar.done();
    const [permgraph, plainTable, withoutAudit] = [summarize(times.permgraph), summarize(times.plainTable), summarize(times.withoutAudit)];
    return {
      grants: GRANTS,
      permgraph,
      plainTable,
      ratio: round(permgraph.median / plainTable.median, 2),
      withoutAudit,
      ratioWithoutAudit: round(withoutAudit.median / plainTable.median, 2),
      deferredChecksTimed: true,
      server: info,
      raw: { plainTable: times.plainTable.map((v) => round(v, 1)), permgraph: times.permgraph.map((v) => round(v, 1)), withoutAudit: times.withoutAudit.map((v) => round(v, 1)) },
    };
  } finally {
    await db.dispose();
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

export function formatCapture(r: CaptureResult): string {
  return [
    `one INSERT of ${r.grants.toLocaleString('en')} grants (median of ${r.permgraph.n}, rolled back)`,
    `  permgraph.grants (capture, edges, audit)  ${round(r.permgraph.median, 0)} ms`,
    ...(r.withoutAudit ? [`  ... with the audit log off               ${round(r.withoutAudit.median, 0)} ms`] : []),
    `  plain table, same indexes, no triggers    ${round(r.plainTable.median, 0)} ms`,
    `  ratio: ${r.ratio}×${r.ratioWithoutAudit ? ` (audit log off: ${r.ratioWithoutAudit}×)` : ''}`,
  ].join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  say(formatCapture(await measureCapture()));
}
