// Whether a change costs more on a small graph than on a large one, measured
// side by side: org small and org large in two databases of one server, and
// the same changes inside the fixed-size probe cluster (ids x…, identical at
// every size) applied to each in turn, ABBA, so that drift on a shared host
// hits both alike. The main runs measure the same changes, but small and
// large in runs hours apart, on a host whose speed moves by tens of percent
// in that time; only side by side does a ratio say something about the
// engine (issue 12: "small graphs must never be slower per change than
// large ones").
//   npm run bench -- --scaling [--postgres <major>]   (saved and reported)
import type { ConnectionPool } from '../../src/db/pool.ts';
import { applyChanges, type BatchResult } from '../../src/engine/apply.ts';
import { generateCsv } from '../generate.ts';
import { loadGraph } from '../graph/load.ts';
import type { Size } from '../graph/types.ts';
import { progress, say } from '../lib/progress.ts';
import { createRng, type Rng } from '../lib/rng.ts';
import { freshDatabase, type BenchDatabase } from '../lib/server.ts';
import { round, roundSummary, summarize, type Summary } from '../lib/stats.ts';
import { CHANGE_KINDS, makeChange, readPools, type ChangeKind, type Pools } from './changes.ts';

/** Samples per change kind and graph. */
const SAMPLES_PER_KIND = 100;
const SIZES = ['small', 'large'] as const satisfies readonly Size[];

export interface ScalingSide {
  permissions: number;
  /** Client time of applyChanges(), ms. */
  latency: Summary;
  /** The applying function's own ms (server side, before commit). */
  serverMs: Summary;
  regionPairs: Summary;
  written: Summary;
}

export interface ScalingKind {
  kind: ChangeKind;
  samples: number;
  small: ScalingSide;
  large: ScalingSide;
  /** small ÷ large, of the medians: above 1, the small graph paid more for the same change. */
  latencyRatio: number;
  serverRatio: number;
}

export interface ScalingResult {
  seed: string;
  samplesPerKind: number;
  graphs: Record<(typeof SIZES)[number], { nodes: number; grants: number; permissions: number }>;
  kinds: ScalingKind[];
  /** small ÷ large of the medians of every sample of every kind pooled. */
  pooled: { latencyRatio: number; serverRatio: number };
}

interface Sample {
  clientMs: number;
  batch: BatchResult;
}

/** Make the change, time its apply, undo it (untimed). */
async function timeOne(db: ConnectionPool, kind: ChangeKind, pools: Pools, rng: Rng): Promise<{ target: string; sample: Sample } | null> {
  const change = makeChange(kind, pools, rng);
  if (!change) return null;
  await db.query(change.apply);
  const started = performance.now();
  const batch = await applyChanges(db);
  const sample = { clientMs: performance.now() - started, batch };
  if (change.revert) {
    await db.query(change.revert);
    await applyChanges(db);
  }
  return { target: change.target, sample };
}

function side(samples: Sample[], permissions: number): ScalingSide {
  return {
    permissions,
    latency: roundSummary(summarize(samples.map((s) => s.clientMs))),
    serverMs: roundSummary(summarize(samples.map((s) => s.batch.ms))),
    regionPairs: roundSummary(summarize(samples.map((s) => s.batch.regionPairs ?? 0))),
    written: roundSummary(summarize(samples.map((s) => s.batch.inserted + s.batch.updated + s.batch.deleted))),
  };
}

const ratio = (a: number, b: number) => round(a / b, 2);

export async function measureScaling(serverUrl: string, seed: string, { keep = false } = {}): Promise<ScalingResult> {
  const databases: BenchDatabase[] = [];
  try {
    const graphs = {} as ScalingResult['graphs'];
    for (const size of SIZES) {
      say(`generating and loading org ${size} (seed ${seed})`);
      const generated = await generateCsv('org', size, seed);
      const bdb = await freshDatabase(serverUrl, `scaling_org_${size}`);
      databases.push(bdb);
      const loaded = await loadGraph(bdb.db, bdb.url, generated.dir);
      graphs[size] = { nodes: loaded.nodes, grants: loaded.grants, permissions: loaded.permissions };
    }
    const [small, large] = databases as [BenchDatabase, BenchDatabase];
    // The probe cluster is the same on both graphs, so the same seed picks
    // the same changes on each (checked below, target by target).
    const pools = { small: await readPools(small.db, 'probe'), large: await readPools(large.db, 'probe') };
    const rngs = { small: createRng(`${seed}-scaling`), large: createRng(`${seed}-scaling`) };
    const kinds: ScalingKind[] = [];
    const pooled = { small: [] as Sample[], large: [] as Sample[] };
    const bar = progress('probe changes, small and large in turn', CHANGE_KINDS.length * SAMPLES_PER_KIND);
    for (const kind of CHANGE_KINDS) {
      const samples = { small: [] as Sample[], large: [] as Sample[] };
      for (let i = 0; i < SAMPLES_PER_KIND; i++) {
        const order = i % 4 === 0 || i % 4 === 3 ? (['small', 'large'] as const) : (['large', 'small'] as const);
        const got: Partial<Record<'small' | 'large', { target: string; sample: Sample } | null>> = {};
        for (const size of order) got[size] = await timeOne(size === 'small' ? small.db : large.db, kind, pools[size], rngs[size]);
        bar.tick();
        if (!got.small || !got.large) {
          if (got.small || got.large) throw new Error(`scaling: ${kind} found a candidate on one graph only; the probe cluster differs between sizes`);
          continue;
        }
        if (got.small.target !== got.large.target) {
          throw new Error(`scaling: ${kind} picked ${got.small.target} on the small graph and ${got.large.target} on the large one; the probe cluster differs between sizes`);
        }
        samples.small.push(got.small.sample);
        samples.large.push(got.large.sample);
      }
      if (!samples.small.length) continue;
      pooled.small.push(...samples.small);
      pooled.large.push(...samples.large);
      const s = side(samples.small, graphs.small.permissions);
      const l = side(samples.large, graphs.large.permissions);
      kinds.push({ kind, samples: samples.small.length, small: s, large: l, latencyRatio: ratio(s.latency.median, l.latency.median), serverRatio: ratio(s.serverMs.median, l.serverMs.median) });
    }
    bar.done();
    const median = (samples: Sample[], pick: (s: Sample) => number) => summarize(samples.map(pick)).median;
    return {
      seed,
      samplesPerKind: SAMPLES_PER_KIND,
      graphs,
      kinds,
      pooled: {
        latencyRatio: ratio(median(pooled.small, (s) => s.clientMs), median(pooled.large, (s) => s.clientMs)),
        serverRatio: ratio(median(pooled.small, (s) => s.batch.ms), median(pooled.large, (s) => s.batch.ms)),
      },
    };
  } finally {
    for (const bdb of databases) {
      if (keep) await bdb.db.dispose();
      else await bdb.drop();
    }
  }
}

export function formatScaling(r: ScalingResult): string {
  const lines = [`probe changes side by side: org small (${r.graphs.small.permissions.toLocaleString('en-US')} rows) and org large (${r.graphs.large.permissions.toLocaleString('en-US')} rows)`];
  for (const k of r.kinds) {
    lines.push(`  ${k.kind.padEnd(16)} small ${round(k.small.latency.median, 2)} ms (server ${round(k.small.serverMs.median, 2)}), large ${round(k.large.latency.median, 2)} ms (server ${round(k.large.serverMs.median, 2)}): small ÷ large ${k.latencyRatio}× (server ${k.serverRatio}×)`);
  }
  lines.push(`  all kinds pooled: small ÷ large ${r.pooled.latencyRatio}× (server ${r.pooled.serverRatio}×)`);
  return lines.join('\n');
}
