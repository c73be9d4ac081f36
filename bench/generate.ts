// Writes the CSV pair of a shape: tsx bench/generate.ts --shape org --size small --seed 1 --out DIR
import { Command } from 'commander';
import path from 'node:path';
import { writeGraphCsv } from './graph/csv.ts';
import { generate } from './graph/shapes.ts';
import { SHAPES, type Shape, type Size } from './graph/types.ts';
import { TMP_DIR } from './lib/server.ts';

export const DEFAULT_SEED = '1';

/** Where the run keeps a generated graph (gitignored). */
export function graphDir(shape: Shape, size: Size, seed: string): string {
  return path.join(TMP_DIR, 'graphs', `${shape}-${size}-seed${seed}`);
}

/** Generates and writes the CSV pair; returns the directory and row counts. */
export async function generateCsv(shape: Shape, size: Size, seed: string, dir = graphDir(shape, size, seed)) {
  const graph = generate(shape, size, seed);
  await writeGraphCsv(dir, graph);
  return { dir, nodes: graph.nodes.length, grants: graph.grants.length };
}

async function main(): Promise<void> {
  const program = new Command()
    .name('generate')
    .description('write nodes.csv and grants.csv of a benchmark graph')
    .requiredOption('--shape <shape>', `one of ${SHAPES.join(', ')}`)
    .option('--size <size>', 'small or large', 'small')
    .option('--seed <seed>', 'seed (same seed, same bytes)', DEFAULT_SEED)
    .option('--out <dir>', 'output directory (default bench/results/tmp/graphs/<shape>-<size>-seed<seed>)')
    .parse();
  const opts = program.opts<{ shape: string; size: string; seed: string; out?: string }>();
  if (!SHAPES.includes(opts.shape as Shape)) throw new Error(`unknown shape ${opts.shape}; use one of ${SHAPES.join(', ')}`);
  if (opts.size !== 'small' && opts.size !== 'large') throw new Error(`unknown size ${opts.size}; use small or large`);
  const result = await generateCsv(opts.shape as Shape, opts.size, opts.seed, opts.out);
  process.stdout.write(`${result.dir}: ${result.nodes} nodes, ${result.grants} grants\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error: unknown) => {
    process.stderr.write(`generate: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
