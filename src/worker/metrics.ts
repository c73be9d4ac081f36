import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { METRICS_DATABASE_TIMEOUT_MS } from '../constants.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { consumerStatus, type ConsumerStatus } from '../engine/changes.ts';
import { ConnectionStalledError } from '../errors.ts';
import type { Worker } from './worker.ts';

/**
 * Prometheus metrics of one worker: what it applied (counted from its batch
 * events) and the backlog (read from the database at scrape time).
 */
export function createWorkerMetrics(worker: Worker, db: Queryable): Registry {
  const registry = new Registry();
  const changes = new Counter({ name: 'permgraph_changes_applied_total', help: 'Captured changes applied', registers: [registry] });
  const batches = new Counter({ name: 'permgraph_batches_total', help: 'Batches applied, by mode', labelNames: ['mode'], registers: [registry] });
  const duration = new Histogram({
    name: 'permgraph_batch_duration_seconds',
    help: 'Server-side duration of applied batches',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const expired = new Counter({
    name: 'permgraph_expired_rows_applied_total',
    help: 'Rows whose valid_until had passed, recomputed by a batch',
    registers: [registry],
  });
  const rows = new Counter({ name: 'permgraph_rows_written_total', help: 'Rows of permissions written, by operation', labelNames: ['op'], registers: [registry] });
  // Gauges read from the database at scrape time (databaseGauge): without
  // a value when the database does not answer, which database_up says.
  new Gauge({
    name: 'permgraph_database_up',
    help: '1 when the database answered this scrape within its time limit, else 0 (the gauges read from it then have no value)',
    registers: [registry],
    async collect() {
      this.set(await timed(ping()).then(() => 1, () => 0));
    },
  });
  const ping = sharedRead(() => db.query(sql`select 1`));
  databaseGauge(registry, 'permgraph_pending_changes', 'Captured changes not yet applied, queued for the next batch (not those a long job holds)', async (gauge) => {
    const [row] = await db.query(sql`select count(*)::bigint as n from permgraph._unapplied_changes where held_by = 'queue'`);
    gauge.set(Number(row.n));
  });
  // The lag readers see: a long job's changes (its own, a backlog it took,
  // and those deferred behind it) are no batch's, but their tokens wait
  // until a chunk lets them go.
  databaseGauge(
    registry,
    'permgraph_oldest_pending_age_seconds',
    'Age of the oldest captured change whose token is not applied yet, queued or held by a long job (0 when none)',
    async (gauge) => {
      const [row] = await db.query(sql`
        select coalesce(extract(epoch from now() - (select min(captured_at) from permgraph._unapplied_changes)), 0)::float8 as age`);
      gauge.set(Number(row.age));
    },
  );
  databaseGauge(
    registry,
    'permgraph_overdue_expiry_seconds',
    'How long ago the earliest valid_until not yet recomputed passed (0 when none): the expiry lag',
    async (gauge) => {
      const [row] = await db.query(
        sql`select coalesce(extract(epoch from now() - min(valid_until)), 0)::float8 as age from permgraph.permissions where valid_until <= now()`,
      );
      gauge.set(Number(row.age));
    },
  );
  // The change stream's consumers, one series each; a consumer dropped since
  // the last scrape disappears. Both gauges take one read per scrape.
  const readConsumers = sharedRead(() => consumerStatus(db));
  const consumerGauge = (name: string, help: string, value: (c: ConsumerStatus) => number) =>
    databaseGauge(
      registry,
      name,
      help,
      async (gauge) => {
        const consumers = await readConsumers();
        gauge.reset();
        for (const c of consumers) gauge.set({ consumer: c.consumer }, value(c));
      },
      ['consumer'],
    );
  consumerGauge(
    'permgraph_change_stream_lag_events',
    'How far behind a change stream consumer is, in seqs: at most the events it has not acknowledged, which are kept for it however old',
    (c) => c.lagEvents,
  );
  consumerGauge(
    'permgraph_change_stream_oldest_waiting_age_seconds',
    'Age of the oldest event a change stream consumer has not acknowledged (0 when none)',
    (c) => c.oldestWaitingAgeS ?? 0,
  );
  new Gauge({
    name: 'permgraph_worker_active',
    help: '1 when this worker holds the applier role',
    registers: [registry],
    collect() {
      this.set(worker.role === 'active' ? 1 : 0);
    },
  });
  // Long jobs (sql/functions/065_long_job.sql): chunks applied by this worker, and the job's progress
  const chunks = new Counter({ name: 'permgraph_long_job_chunks_total', help: 'Chunks of long jobs applied', registers: [registry] });
  const chunkDuration = new Histogram({
    name: 'permgraph_long_job_chunk_duration_seconds',
    help: 'Server-side duration of applied long-job chunks',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  // (not status(): it counts the whole permission table)
  const readJob = sharedRead(async (): Promise<Record<string, any> | null> => {
    const [job] = await db.query(sql`
      select j.finished_at, j.started_at, j.users_total, (select count(*) from permgraph.long_job_users) as users_remaining
      from permgraph.long_job j`);
    return job ?? null;
  });
  const jobGauge = (name: string, help: string, read: (job: Record<string, any> | null) => number) =>
    databaseGauge(registry, name, help, async (gauge) => gauge.set(read(await readJob())));
  const running = (job: Record<string, any> | null) => job !== null && job.finished_at === null;
  jobGauge('permgraph_long_job_active', '1 while a long job runs', (job) => (running(job) ? 1 : 0));
  jobGauge('permgraph_long_job_users_total', 'Users the running long job recomputes (0 when none runs)', (job) => (running(job) ? Number(job!.users_total) : 0));
  jobGauge('permgraph_long_job_users_remaining', 'Users the running long job has left (0 when none runs)', (job) => (running(job) ? Number(job!.users_remaining) : 0));
  jobGauge('permgraph_long_job_started_timestamp_seconds', 'When the running long job started, Unix time (0 when none runs)', (job) =>
    running(job) ? new Date(job!.started_at).getTime() / 1000 : 0,
  );
  worker.on('chunk', (chunk) => {
    chunks.inc();
    chunkDuration.observe(chunk.ms / 1000);
    rows.inc({ op: 'insert' }, chunk.inserted);
    rows.inc({ op: 'update' }, chunk.updated);
    rows.inc({ op: 'delete' }, chunk.deleted);
  });
  // Every failure the loop survives (a batch that failed, a connection lost):
  // the worker retries as a standby, so the log and this counter are the
  // only signs of a worker that keeps failing.
  const errors = new Counter({ name: 'permgraph_worker_errors_total', help: 'Failures the worker retried after (a failed batch, a lost connection)', registers: [registry] });
  // Of those, the connections its watchdog closed because the database stopped answering (src/worker/watchdog.ts).
  const stalls = new Counter({
    name: 'permgraph_worker_stalled_connections_total',
    help: 'Connections the worker closed because the database stopped answering on them (a network partition); each is also a failure in permgraph_worker_errors_total',
    registers: [registry],
  });
  worker.on('error', (error) => {
    errors.inc();
    if (error instanceof ConnectionStalledError) stalls.inc();
  });
  worker.on('batch', (batch) => {
    changes.inc(batch.changes);
    expired.inc(batch.expired);
    batches.inc({ mode: batch.mode });
    duration.observe(batch.ms / 1000);
    rows.inc({ op: 'insert' }, batch.inserted);
    rows.inc({ op: 'update' }, batch.updated);
    rows.inc({ op: 'delete' }, batch.deleted);
  });
  return registry;
}

/**
 * A gauge whose value is read from the database at scrape time. When the
 * read fails or takes longer than METRICS_DATABASE_TIMEOUT_MS, the gauge
 * has no value in that scrape (NaN, or no series when labelled), instead of
 * failing the whole scrape: the worker's own counters and
 * permgraph_worker_active (and database_up 0) still reach the alerts that
 * need them most, when the database is down.
 */
function databaseGauge(registry: Registry, name: string, help: string, read: (gauge: Gauge) => Promise<void>, labelNames: string[] = []): Gauge {
  const gauge: Gauge = new Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    async collect() {
      // (a labelled gauge loses its series; an unlabelled one would read 0 after reset(), so it reads NaN)
      await timed(readOnce()).catch(() => (labelNames.length > 0 ? this.reset() : this.set(Number.NaN)));
    },
  });
  // A read still running when the next scrape comes is joined, not started
  // again: at most one per gauge in flight, however slow the database.
  const readOnce = sharedRead(() => read(gauge));
  return gauge;
}

/** The promise, or a rejection once the scrape's time for the database is up (the query itself runs on). */
function timed<T>(promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('the database did not answer in time')), METRICS_DATABASE_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * One read shared by the gauges that need it within a scrape: the registry
 * starts every gauge's collect() at once, so they all join the read in
 * flight, and the next scrape starts a new one.
 */
function sharedRead<T>(read: () => Promise<T>): () => Promise<T> {
  let inFlight: Promise<T> | undefined;
  return () =>
    (inFlight ??= read().finally(() => {
      inFlight = undefined;
    }));
}

/** Serves the registry at /metrics. */
export async function serveMetrics(registry: Registry, port: number, host = '0.0.0.0'): Promise<Server> {
  const server = createServer((req, res) => {
    // the path alone: a scrape may add a query string (Prometheus' `params`)
    if (new URL(req.url ?? '/', 'http://metrics').pathname !== '/metrics') {
      res.writeHead(404).end('not found\n');
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (error: unknown) => res.writeHead(500).end(`${String(error)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return server;
}
