// The report's section on other major versions of PostgreSQL (`npm run
// bench -- --postgres 15`): the main report is the embedded server's; runs
// on other versions are set beside it here, shape by shape, each version's
// newest run (never mixed into the goals).
import type { RunResult } from '../lib/result.ts';
import { formatValue } from './svg.ts';

/** The major version of PostgreSQL a run measured; null for phases that started servers of their own. */
export function majorOf(run: RunResult): string | null {
  return /^PostgreSQL (\d+)/.exec(run.postgres?.version ?? '')?.[1] ?? null;
}

/** Orders major versions: the embedded server's first, then the others from the oldest. */
export function embeddedFirst(embeddedMajor: string): (a: string, b: string) => number {
  return (a, b) => Number(b === embeddedMajor) - Number(a === embeddedMajor) || Number(a) - Number(b);
}

/** What one (size, shape) measured on one version; null where that phase was not measured. */
export interface VersionFigures {
  shape: string;
  size: string;
  /** The run file of its refresh (its other phases may come from older runs of the same version). */
  file: string;
  version: string;
  refreshVsFloor: number;
  noopVsFloor: number;
  incrementalMedian: number | null;
  localVsCommit: number | null;
  checkServer: number | null;
  firstPageServer: number | null;
  targetsFirstPageServer: number | null;
  wholeListServer: number | null;
  /** The server's settings the run recorded (compared with the embedded server's run of the same shape). */
  settings: Record<string, string>;
  /** The worker phases (org): the highest rate offered that it kept up with, and the most it applied, changes/s. */
  worker: { keptUp: number | null; applied: number } | null;
}

/** A row's major version ("15" of "15.18"). */
const major = (f: VersionFigures): string => f.version.split('.')[0]!;

const ms = (v: number | null) => (v === null || !Number.isFinite(v) ? 'n/a' : formatValue(v, 'ms'));
const times = (v: number | null) => (v === null || !Number.isFinite(v) ? 'n/a' : `${v}×`);

/** Rows grouped by shape and size, the embedded server's version first in each group; empty when no other version was measured. */
export function versionsSection(embeddedMajor: string, figures: VersionFigures[]): string[] {
  const majors = [...new Set(figures.map(major))];
  if (!majors.some((m) => m !== embeddedMajor)) return [];
  const groups = [...new Set(figures.map((f) => `${f.size}/${f.shape}`))];
  const first = embeddedFirst(embeddedMajor);
  const lines = [
    '## Other versions of PostgreSQL', '',
    `The figures above are the embedded PostgreSQL ${embeddedMajor}'s. The same benchmark on throwaway clusters of other major versions (\`npm run bench -- --postgres <major>\`: the same settings, the same machine, another hour), each version's newest run; a row compares with the one above it only as far as the machine's drift between hours allows (±30% on this 2-core host for the same code: bench/FINDINGS.md 31). Server-side medians; the first pages are the slowest among the heaviest users. "settings": the server settings each run recorded, against the first row's of its shape (\`same\`, or the ones that differ).`, '',
    '| shape | size | PostgreSQL | run file | settings | refresh ÷ floor | no-op ÷ floor | incr. median | local ÷ commit | check() server | first page (list_rows) | first page (list_targets) | whole list (list_rows) | worker: kept up / applied |',
    '|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const group of groups) {
    const rows = figures.filter((f) => `${f.size}/${f.shape}` === group).sort((a, b) => first(major(a), major(b)));
    if (rows.length < 2) continue;  // (a shape measured on one version only compares with nothing)
    const reference = rows[0]!;
    for (const f of rows) {
      lines.push(`| ${f.shape} | ${f.size} | ${f.version} | ${f.file} | ${f === reference ? 'the reference' : settingsAgainst(f.settings, reference)} | ${f.refreshVsFloor}× | ${f.noopVsFloor}× | ${ms(f.incrementalMedian)} | ${times(f.localVsCommit)} | ${ms(f.checkServer)} | ${ms(f.firstPageServer)} | ${ms(f.targetsFirstPageServer)} | ${ms(f.wholeListServer)} | ${f.worker ? `${f.worker.keptUp?.toLocaleString('en-US') ?? 'none'} / ${f.worker.applied.toLocaleString('en-US')} changes/s` : 'n/a'} |`);
    }
  }
  return lines;
}

/** "same" when a run recorded the reference run's settings, else the ones that differ (name=value, the reference's in parentheses). */
function settingsAgainst(settings: Record<string, string>, reference: VersionFigures): string {
  const names = [...new Set([...Object.keys(settings), ...Object.keys(reference.settings)])].sort();
  const differ = names.filter((n) => settings[n] !== reference.settings[n]);
  if (!differ.length) return 'same';
  return differ.map((n) => `\`${n}=${settings[n] ?? 'unset'}\` (${reference.settings[n] ?? 'unset'})`).join(', ');
}
