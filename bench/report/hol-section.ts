// The report's section on head-of-line blocking (bench/measure/hol.ts).
import type { RunResult } from '../lib/result.ts';
import { runSource } from './provenance.ts';
import { postgresName } from '../lib/environment.ts';
import { embeddedFirst, majorOf } from './versions-section.ts';
import { formatValue } from './svg.ts';

/** Goal of issue 12: the small changes' lag p99 stays at or under this while a huge change is applied. */
const HOL_TARGET_P99_MS = 1000;

const ms = (v: number) => (Number.isFinite(v) ? formatValue(v, 'ms') : 'n/a');
const num = (v: number) => v.toLocaleString('en-US');

/**
 * The newest `--hol` measurement of a clean commit, per size and major
 * version of PostgreSQL: the embedded server's first, then any other
 * version's (`--hol --postgres <major>`).
 */
export function holSection(runs: { run: RunResult; file: string }[], embeddedMajor: string): string[] {
  const lines = ['## Head-of-line blocking', ''];
  const newest = new Map<string, { run: RunResult; file: string }>();
  for (const r of runs) if (r.run.hol && r.run.git.dirty === false) newest.set(`${r.run.size}/${majorOf(r.run)}`, r);
  if (newest.size === 0) return [...lines, 'Not measured yet: `npm run bench -- --hol [--size large]`.'];
  const first = embeddedFirst(embeddedMajor);
  for (const { run, file } of [...newest.values()].sort((a, b) => first(majorOf(a.run) ?? embeddedMajor, majorOf(b.run) ?? embeddedMajor))) {
    const h = run.hol!;
    lines.push(
      `${runSource(run, file)} ` +
        `Org ${h.size} on ${run.postgres ? postgresName(run.postgres.version) : 'PostgreSQL'} (${num(h.permissionsBefore)} rows): one grant of a ${num(h.plan.teamMembers)}-member team onto a group owning ${num(h.plan.ownedGroups)} groups creates **${num(h.bigGrantRows)} rows**, ` +
        `while ${h.plan.streamPerSecond} small changes/s (users outside the team) are committed. Lag = commit → token applied. ` +
        `Chunking off is the behaviour before long jobs (the grant is one batch); on is the worker's default. Goal: the stream's p99 lag ≤ ${ms(HOL_TARGET_P99_MS)} while the grant is pending.`,
      '',
      '| chunking | grant applied after | stream changes meanwhile | lag p50 | p95 | p99 | max | longest worker transaction | chunks | chunk median / max | goal |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    );
    for (const m of h.modes) {
      const met = m.during.lag.p99 <= HOL_TARGET_P99_MS;
      lines.push(`| ${m.chunkPairs === null ? 'off' : `on, ${num(m.chunkPairs)} pairs`} | ${ms(m.bigGrantMs)} | ${num(m.during.changes)} | ${ms(m.during.lag.median)} | ${ms(m.during.lag.p95)} | **${ms(m.during.lag.p99)}** | ${ms(m.during.lag.max)} | ${ms(m.longestTransactionMs)} | ${m.job ? num(m.job.chunks) : '-'} | ${m.job ? `${ms(m.job.chunkMs.median)} / ${ms(m.job.chunkMs.max)}` : '-'} | ${met ? 'met' : 'MISSED'} |`);
    }
    lines.push('', `Verification afterwards (\`permgraph.verify()\`): **${h.verify.differences} difference(s)**.`, '');
  }
  return lines;
}
