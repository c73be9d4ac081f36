// Where a report section's figures come from: the newest run of a clean
// commit holding a phase, and the sentence that names it.
import type { RunResult } from '../lib/result.ts';

export type Runs = { run: RunResult; file: string }[];

/** The phases found at most once per report: the newest clean run holding each. */
type NewestPhase = 'import' | 'scaling' | 'stock' | 'capture' | 'coldstart';

/** The newest run of a clean commit holding this phase, with the phase's result. */
export function newestPhase<K extends NewestPhase>(runs: Runs, phase: K): { run: RunResult; file: string; result: NonNullable<RunResult[K]> } | null {
  const found = [...runs].reverse().find((r) => r.run[phase] !== undefined && r.run.git.dirty === false);
  return found ? { ...found, result: found.run[phase] as NonNullable<RunResult[K]> } : null;
}

/** "From FILE (commit C, N cores, load average A → B)." */
export function runSource(run: RunResult, file: string): string {
  const commit = run.git.commit ? run.git.commit.slice(0, 10) : 'unknown';
  return `From ${file} (commit ${commit}, ${run.machine.cpus} cores, load average ${run.machine.loadAverage?.[0] ?? '?'} → ${run.machine.loadAverageAtEnd?.[0] ?? '?'}).`;
}
