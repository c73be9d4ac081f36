import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * Files that read something the whole server shares, and so run after the
 * others, one at a time. The change queue's low-water mark is the oldest
 * transaction running anywhere on the server (transaction ids are
 * server-wide): another file's open transaction holds it back.
 */
const ALONE = ['test/engine/queue-low-water.test.ts'];

export default defineConfig({
  test: {
    globalSetup: ['test/setup/global.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'shared',
          include: ['test/**/*.test.ts'],
          exclude: ALONE,
          // Vitest's default, one file per core but one, runs one file at a
          // time on a 2-core machine, where a file's work is split between
          // its own process and the PostgreSQL backends it waits for: half
          // the CPU sat idle.
          maxWorkers: Math.max(availableParallelism(), 2),
          sequence: { groupOrder: 0 },
        },
      },
      { extends: true, test: { name: 'alone', include: ALONE, maxWorkers: 1, sequence: { groupOrder: 1 } } },
    ],
  },
});
