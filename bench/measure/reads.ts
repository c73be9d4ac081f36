// 3. Reads: check(), a permission-filtered listing of an app table, and "who
// can see this", each against the same question answered by a recursive walk
// at read time (measure/baseline.ts). Answers are compared, not just timed.
import pg from 'pg';
import { sql, type Queryable } from '../../src/db/pool.ts';
import type { RunPlan } from '../lib/plan.ts';
import { progress } from '../lib/progress.ts';
import { round, roundSummary, summarize, type Summary } from '../lib/stats.ts';
import { installBaselines, LISTING, LISTING_FLOOR, TARGETS, VIEWERS_QUERY } from './baseline.ts';

export interface Compared {
  permgraph: Summary;
  recursive: Summary;
  /** recursive median / permgraph median. */
  speedup: number;
}

export interface CheckResult {
  pairs: number;
  allowed: number;
  /** Pairs where check() and the recursive walk disagree (among those both answered). */
  disagreements: number;
  /**
   * Pairs the recursive walk answered within its budget (the first ones,
   * allowed and mostly denied alternating): the disagreements are counted,
   * and the speed-ups taken, over these alone. Absent in older results.
   */
  compared?: number;
  client: Compared;
  /** Per call inside the server (a PL/pgSQL loop around each function). */
  server: Compared;
  throughput: { connections: number; permgraphPerSecond: number; recursivePerSecond: number | null }[];
}

export interface ListingResult {
  user: string;
  visibleDocs: number;
  firstPage: Compared;
  whole: Compared;
  /** The same queries timed inside the server (bench.time_query); absent in older results. */
  firstPageServer?: Compared;
  wholeServer?: Compared;
  /**
   * The floor of the whole list: as many rows of bench_docs read in id order
   * with no permission filter (LISTING_FLOOR), on the client and in the
   * server; absent in older results.
   */
  wholeFloor?: Summary;
  wholeFloorServer?: Summary;
  /** The same user's nodes through list_targets (TARGETS), client and server; absent in older results. */
  targets?: TargetsResult;
  agree: boolean;
}

export interface TargetsResult {
  /** Rows of the whole list. */
  rows: number;
  firstPage: Summary;
  whole: Summary;
  firstPageServer: Summary;
  wholeServer: Summary;
}

export interface ViewersResult {
  target: string;
  viewers: number;
  latency: Compared;
  agree: boolean;
}

export interface ReadsResult {
  check: CheckResult;
  listings: ListingResult[];
  viewers: ViewersResult[];
}

type Params = (string | number)[];

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, application_name: 'permgraph-bench-reads' });
  // A connection the server ends (a run interrupted, the server stopping) fails the query in flight;
  // without a listener, its 'error' event also crashed the process before it could stop its server.
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** One prepared query, timed on the client; returns rows and ms. */
async function run(client: pg.Client, name: string, text: string, values: Params): Promise<{ rows: Record<string, unknown>[]; ms: number }> {
  const started = performance.now();
  const result = await client.query({ name, text, values });
  return { rows: result.rows, ms: performance.now() - started };
}

/** Runs fn over items until all are done or budgetMs is spent (at least minimum items). */
async function withinBudget<T, R>(items: readonly T[], budgetMs: number, fn: (item: T) => Promise<R>, minimum = 3): Promise<R[]> {
  const out: R[] = [];
  const started = performance.now();
  for (const item of items) {
    out.push(await fn(item));
    if (out.length >= minimum && performance.now() - started > budgetMs) break;
  }
  return out;
}

/**
 * Both sides' summaries; the speed-up is taken over the same samples: when
 * the recursion, cut short by its budget, timed only the first of the
 * items permgraph timed (check()'s pairs), permgraph's median over those
 * same items.
 */
function compared(permgraph: number[], recursive: number[], paired = false): Compared {
  const a = roundSummary(summarize(permgraph));
  const b = roundSummary(summarize(recursive));
  const base = paired ? summarize(permgraph.slice(0, recursive.length)).median : a.median;
  return { permgraph: a, recursive: b, speedup: round(b.median / base, 1) };
}

async function samplePairs(db: Queryable, count: number): Promise<[string, string][]> {
  const [size] = await db.query(sql`select greatest(reltuples, 1)::float8 as n from pg_class where oid = 'permgraph.permissions'::regclass`);
  const percent = Math.min(100, (100 * 4 * count) / Number(size?.n ?? 1));
  const rows: { user_id: string; target_id: string }[] = await db.query(sql`
    select user_id, target_id from permgraph.permissions tablesample bernoulli (${percent}) repeatable (7)
    where user_id <> target_id order by md5(user_id || '/' || target_id) limit ${Math.ceil(count / 2)}`);
  const allowed = rows.map((r): [string, string] => [r.user_id, r.target_id]);
  // The same users paired with other rows' targets: mostly denied.
  const mixed = allowed.map((pair, i): [string, string] => [pair[0], (allowed[(i * 7 + 3) % allowed.length] as [string, string])[1]]);
  // Alternating, so that the first pairs, all a slow baseline answers
  // within its budget, hold both kinds: in two halves, the walk (which stops
  // at its first match) timed only allowed pairs while check() was timed
  // on all of them (deep small: the walk answered 20 of 200).
  return allowed.flatMap((pair, i) => [pair, mixed[i] as [string, string]]);
}

async function throughput(url: string, text: string, pairs: [string, string][], connections: number, durationMs: number): Promise<number> {
  const clients = await Promise.all(Array.from({ length: connections }, () => connect(url)));
  let done = 0;
  const deadline = performance.now() + durationMs;
  const started = performance.now();
  await Promise.all(
    clients.map(async (client, c) => {
      for (let i = c; performance.now() < deadline; i += connections) {
        const [u, t] = pairs[i % pairs.length] as [string, string];
        await client.query({ name: 'tp', text, values: [u, t, 1] });
        done++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await Promise.all(clients.map((c) => c.end()));
  return Math.round(done / seconds);
}

const CHECK_PG = 'select permgraph.check($1, $2, $3) as ok';
const CHECK_REC = 'select bench.rec_check($1, $2, $3) as ok';

async function serverTimes(db: Queryable, recursive: boolean, pairs: [string, string][], budgetMs: number): Promise<number[]> {
  const chunks: [string, string][][] = [];
  for (let i = 0; i < pairs.length; i += 20) chunks.push(pairs.slice(i, i + 20));
  const times = await withinBudget(chunks, budgetMs, async (chunk) => {
    const [row] = await db.query(sql`
      select bench.time_checks(${recursive}, ${chunk.map((p) => p[0])}::text[], ${chunk.map((p) => p[1])}::text[], 1) as ms`);
    return (row?.ms ?? []) as number[];
  }, 1);
  return times.flat();
}

async function measureChecks(db: Queryable, url: string, plan: RunPlan): Promise<CheckResult> {
  const pairs = await samplePairs(db, plan.checkPairs);
  const bar = progress('check() vs recursion', 4 + plan.concurrency.length);
  const client = await connect(url);
  try {
    for (const [u, t] of pairs.slice(0, 20)) await run(client, 'pg_check', CHECK_PG, [u, t, 1]); // warm up
    const pgAnswers: { rows: Record<string, unknown>[]; ms: number }[] = [];
    for (const [u, t] of pairs) pgAnswers.push(await run(client, 'pg_check', CHECK_PG, [u, t, 1]));
    bar.tick();
    const recAnswers = await withinBudget(pairs, plan.readBudgetMs, ([u, t]) => run(client, 'rec_check', CHECK_REC, [u, t, 1]), 10);
    bar.tick();
    let disagreements = 0;
    recAnswers.forEach((answer, i) => {
      if (answer.rows[0]?.ok !== pgAnswers[i]?.rows[0]?.ok) disagreements++;
    });
    const serverPg = await serverTimes(db, false, pairs, plan.readBudgetMs);
    bar.tick();
    const serverRec = await serverTimes(db, true, pairs, plan.readBudgetMs);
    bar.tick();
    const tp: CheckResult['throughput'] = [];
    for (const connections of plan.concurrency) {
      const permgraphPerSecond = await throughput(url, CHECK_PG, pairs, connections, plan.throughputMs);
      const isMax = connections === Math.max(...plan.concurrency);
      const recursivePerSecond = isMax ? await throughput(url, CHECK_REC, pairs, connections, plan.throughputMs) : null;
      tp.push({ connections, permgraphPerSecond, recursivePerSecond });
      bar.tick();
    }
    bar.done();
    return {
      pairs: pairs.length,
      allowed: pgAnswers.filter((a) => a.rows[0]?.ok === true).length,
      disagreements,
      compared: recAnswers.length,
      client: compared(pgAnswers.map((a) => a.ms), recAnswers.map((a) => a.ms), true),
      server: compared(serverPg, serverRec, true),
      throughput: tp,
    };
  } finally {
    await client.end();
  }
}

function ids(rows: Record<string, unknown>[], column: string): string {
  return rows.map((r) => String(r[column])).sort().join(',');
}

/**
 * One untimed call of a prepared query first, as check() gets its warm-up:
 * a session's first call of a listing compiles its PL/pgSQL and fills the
 * catalog caches (several ms), which a pooled connection pays once, not
 * per page.
 */
async function warmUp(client: pg.Client, name: string, text: string, values: Params): Promise<void> {
  await run(client, name, text, values);
}

/** Times a query kind both ways (same parameters), reps bounded by the budget; compares answers. */
async function both(client: pg.Client, name: string, texts: { permgraph: string; recursive: string }, values: Params, plan: RunPlan, column: string) {
  const reps = Array.from({ length: plan.listingReps }, (_, i) => i);
  await warmUp(client, `${name}_pg`, texts.permgraph, values);
  await warmUp(client, `${name}_rec`, texts.recursive, values);
  const pgRuns = await withinBudget(reps, plan.readBudgetMs, () => run(client, `${name}_pg`, texts.permgraph, values), plan.minReps);
  const recRuns = await withinBudget(reps, plan.readBudgetMs, () => run(client, `${name}_rec`, texts.recursive, values), plan.minReps);
  const agree = ids(pgRuns[0]?.rows ?? [], column) === ids(recRuns[0]?.rows ?? [], column);
  return { times: compared(pgRuns.map((r) => r.ms), recRuns.map((r) => r.ms)), rows: pgRuns[0]?.rows.length ?? 0, agree };
}

/** A query kind timed inside the server both ways (bench.time_query), after the client's runs warmed the session. */
async function serverBoth(client: pg.Client, texts: { permgraph: string; recursive: string }, user: string, plan: RunPlan): Promise<Compared> {
  return compared(await serverQueryTimes(client, texts.permgraph, user, plan), await serverQueryTimes(client, texts.recursive, user, plan));
}

/** The whole list's floor (LISTING_FLOOR): the same number of rows with no permission filter, on the client and in the server. */
async function wholeFloor(client: pg.Client, rows: number, plan: RunPlan): Promise<{ wholeFloor: Summary; wholeFloorServer: Summary }> {
  const reps = Array.from({ length: plan.listingReps }, (_, i) => i);
  const onClient = await withinBudget(reps, plan.readBudgetMs, () => run(client, 'whole_floor', LISTING_FLOOR, [rows]), plan.minReps);
  const inServer = await serverQueryTimes(client, LISTING_FLOOR, String(rows), plan);
  return { wholeFloor: roundSummary(summarize(onClient.map((r) => r.ms))), wholeFloorServer: roundSummary(summarize(inServer)) };
}

/** Server-side times of a query taking one text parameter $1 (bench.time_query), reps bounded by the budget. */
async function serverQueryTimes(client: pg.Client, text: string, value: string, plan: RunPlan): Promise<number[]> {
  const times: number[] = [];
  const started = performance.now();
  while (times.length < plan.listingReps) {
    const result = await client.query('select bench.time_query($1, $2, 1) as ms', [text, value]);
    times.push(...(result.rows[0]?.ms as number[]));
    if (times.length >= plan.minReps && performance.now() - started > plan.readBudgetMs) break;
  }
  return times;
}

/** list_targets for the user (TARGETS): first page and whole list, on the client and in the server. */
async function measureTargets(client: pg.Client, user: string, plan: RunPlan): Promise<TargetsResult> {
  const reps = Array.from({ length: plan.listingReps }, (_, i) => i);
  await warmUp(client, 'targets_page', TARGETS.page, [user]);
  const page = await withinBudget(reps, plan.readBudgetMs, () => run(client, 'targets_page', TARGETS.page, [user]), plan.minReps);
  const whole = await withinBudget(reps, plan.readBudgetMs, () => run(client, 'targets_whole', TARGETS.whole, [user]), plan.minReps);
  const summary = (xs: number[]) => roundSummary(summarize(xs));
  return {
    rows: whole[0]?.rows.length ?? 0,
    firstPage: summary(page.map((r) => r.ms)),
    whole: summary(whole.map((r) => r.ms)),
    firstPageServer: summary(await serverQueryTimes(client, TARGETS.page, user, plan)),
    wholeServer: summary(await serverQueryTimes(client, TARGETS.whole, user, plan)),
  };
}

async function measureListings(db: Queryable, url: string, plan: RunPlan): Promise<ListingResult[]> {
  const heavy: { user_id: string }[] = await db.query(sql`
    select user_id from permgraph.permissions group by user_id order by count(*) desc, user_id limit ${plan.heavyUsers}`);
  const bar = progress('listing vs recursion', heavy.length);
  const client = await connect(url);
  const out: ListingResult[] = [];
  try {
    for (const { user_id: user } of heavy) {
      const page = { permgraph: LISTING.permgraphPage, recursive: `${LISTING.recursive} limit 100` };
      const first = await both(client, 'page', page, [user], plan, 'id');
      const whole = await both(client, 'whole', { permgraph: LISTING.permgraph, recursive: LISTING.recursive }, [user], plan, 'id');
      const firstPageServer = await serverBoth(client, page, user, plan);
      const wholeServer = await serverBoth(client, { permgraph: LISTING.permgraph, recursive: LISTING.recursive }, user, plan);
      const floor = await wholeFloor(client, whole.rows, plan);
      const targets = await measureTargets(client, user, plan);
      out.push({ user, visibleDocs: whole.rows, firstPage: first.times, whole: whole.times, firstPageServer, wholeServer, ...floor, targets, agree: first.agree && whole.agree });
      bar.tick();
    }
  } finally {
    await client.end();
  }
  bar.done();
  return out;
}

async function measureViewers(db: Queryable, url: string, plan: RunPlan): Promise<ViewersResult[]> {
  const shared: { target_id: string }[] = await db.query(sql`
    select p.target_id from permgraph.permissions p join permgraph.nodes n on n.id = p.target_id and n.kind = 'group'
    group by p.target_id order by count(*) desc, p.target_id limit ${plan.sharedTargets}`);
  const bar = progress('who can see vs recursion', shared.length);
  const client = await connect(url);
  const out: ViewersResult[] = [];
  try {
    for (const { target_id: target } of shared) {
      const result = await both(client, 'viewers', VIEWERS_QUERY, [target], plan, 'user_id');
      out.push({ target, viewers: result.rows, latency: result.times, agree: result.agree });
      bar.tick();
    }
  } finally {
    await client.end();
  }
  bar.done();
  return out;
}

export async function measureReads(db: Queryable, url: string, plan: RunPlan): Promise<ReadsResult> {
  await installBaselines(db);
  return {
    check: await measureChecks(db, url, plan),
    listings: await measureListings(db, url, plan),
    viewers: await measureViewers(db, url, plan),
  };
}
