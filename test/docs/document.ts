// One Markdown document as a suite of doctests (see doctest.ts): a test that
// every block is run or tagged no-test, a type-check of its TypeScript, then
// one test per block, in document order.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import {
  createdRoles,
  kindOf,
  parseBlocks,
  parseShell,
  removeScratch,
  renameRoles,
  REPO,
  runProgram,
  runShell,
  scratchFolder,
  splitStatements,
  SqlSession,
  typecheckPrograms,
  type Block,
} from './doctest.ts';

export interface DocumentOptions {
  /** The least number of blocks that must run (guards against a parser that finds nothing). */
  minimumRun?: number;
}

export function describeDocument(relativePath: string, options: DocumentOptions = {}): void {
  const parsed = parseBlocks(readFileSync(path.join(REPO, relativePath), 'utf8'));

  describe(`${relativePath}: every code block runs as written`, async () => {
    const { blocks, renamed } = renameRoles(parsed, createdRoles(parsed));
    const where = (block: Block, line = 1) => `${relativePath}:${block.line + line}`;
    const label = (block: Block) => `${relativePath}:${block.line} \`\`\`${[block.lang, ...block.tags].join(' ')}${block.attrs.file ? ` file=${block.attrs.file}` : ''}`;
    const programs = blocks.filter((b) => kindOf(b) === 'ts').map((b) => ({ block: b, name: `block_${b.line}`, code: b.code }));

    const database = await createTestDatabase();
    // Each program gets its own database: programs create their own nodes.
    const programDatabases = new Map<string, TestDatabase>();
    for (const program of programs) programDatabases.set(program.name, await createTestDatabase());
    const scratch = await scratchFolder();
    for (const block of blocks) {
      if (kindOf(block) === 'file') await writeFile(path.join(scratch, block.attrs.file!), `${block.code}\n`);
    }
    const session = new SqlSession(database.url);
    await session.open();

    afterAll(async () => {
      await session.close();
      for (const role of renamed.values()) {
        const [{ exists }] = await database.db.query(sql`select exists (select 1 from pg_roles where rolname = ${role}) as exists`);
        if (!exists) continue;
        await database.db.query(sql`drop owned by ${sql.ident(role)} cascade`);
        await database.db.query(sql`drop role ${sql.ident(role)}`);
      }
      await removeScratch(scratch);
    });

    it('every block is run or tagged no-test', () => {
      const untagged = blocks.filter((b) => kindOf(b) === 'untagged').map(label);
      expect(untagged, 'blocks that neither run nor carry the no-test tag').toEqual([]);
      const run = blocks.filter((b) => !['no-test', 'untagged'].includes(kindOf(b)));
      expect(run.length).toBeGreaterThanOrEqual(options.minimumRun ?? 1);
    });

    if (programs.length) {
      it('the TypeScript blocks type-check against src/index.ts', async () => {
        await typecheckPrograms(scratch, programs);
      });
    }

    for (const block of blocks) {
      const kind = kindOf(block);
      if (kind === 'sql') {
        it(label(block), async () => {
          await session.run(splitStatements(block.code), (statement) => where(block, statement.line));
        });
      } else if (kind === 'sh') {
        it(label(block), async () => {
          await runShell(parseShell(block.code), database.url, scratch, (command) => where(block, command.line));
        });
      } else if (kind === 'ts') {
        const program = programs.find((p) => p.block === block)!;
        it(label(block), async () => {
          await runProgram(scratch, program.name, program.code, programDatabases.get(program.name)!.url);
        });
      }
    }
  });
}
