// Summary statistics of repeated measurements.

export interface Summary {
  n: number;
  min: number;
  median: number;
  mean: number;
  p95: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentile of sorted values (p in 0..100). */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

function median(sorted: readonly number[]): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const mid = Math.floor(n / 2);
  return n % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((x, y) => x - y);
  const sum = sorted.reduce((acc, v) => acc + v, 0);
  return {
    n: sorted.length,
    min: sorted[0] ?? Number.NaN,
    median: median(sorted),
    mean: sorted.length ? sum / sorted.length : Number.NaN,
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/** Rounds for JSON output (3 decimals keeps microseconds of milliseconds). */
export function round(value: number, digits = 3): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

export function roundSummary(summary: Summary): Summary {
  return {
    n: summary.n,
    min: round(summary.min),
    median: round(summary.median),
    mean: round(summary.mean),
    p95: round(summary.p95),
    p99: round(summary.p99),
    max: round(summary.max),
  };
}

/** Milliseconds since an earlier performance.now(). */
export function elapsedMs(start: number): number {
  return performance.now() - start;
}

/**
 * Runs fn repeatedly: at least minReps times, at most reps times, stopping
 * early once budgetMs has been spent (slow baselines get fewer samples).
 */
export async function repeat(
  fn: (i: number) => Promise<number>,
  options: { reps: number; minReps?: number; budgetMs?: number },
): Promise<number[]> {
  const samples: number[] = [];
  const started = performance.now();
  const minReps = Math.min(options.reps, options.minReps ?? 3);
  for (let i = 0; i < options.reps; i++) {
    samples.push(await fn(i));
    if (i + 1 >= minReps && options.budgetMs !== undefined && elapsedMs(started) > options.budgetMs) break;
  }
  return samples;
}
