// The doctest harness itself: it finds every block, reads stated results the
// way the documents write them, and fails on a wrong one (so the document
// tests can fail).
import { afterAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.ts';
import { createdRoles, kindOf, parseBlocks, parseShell, renameRoles, splitStatements, SqlSession, statedOutput } from './doctest.ts';

const fence = '```';

describe('parsing Markdown', () => {
  it('finds fenced blocks with their language, tags and attributes', () => {
    const blocks = parseBlocks(
      [
        'text',
        `${fence}sql`,
        'select 1;',
        fence,
        `${fence}sh no-test`,
        'npm start',
        fence,
        `${fence}json file=catalog.json`,
        '{}',
        fence,
        `${fence}`,
        'a diagram',
        fence,
        '  ~~~ts',
        '  console.log(1); // 1',
        '  ~~~',
      ].join('\n'),
    );
    expect(blocks.map((b) => [b.line, b.lang, b.tags, b.attrs, kindOf(b)])).toEqual([
      [2, 'sql', [], {}, 'sql'],
      [5, 'sh', ['no-test'], {}, 'no-test'],
      [8, 'json', [], { file: 'catalog.json' }, 'file'],
      [11, '', [], {}, 'untagged'],
      [14, 'ts', [], {}, 'ts'],
    ]);
    expect(blocks[4]!.code).toBe('console.log(1); // 1');
  });

  it('splits SQL into statements and reads their stated results', () => {
    const statements = splitStatements(
      [
        "-- prose above",
        "select 'a;b', $$ c; $$ as x;   -- a note",
        "select permgraph.check('u', 't', 1);   -- true (through its owner)",
        'select 1, 2;',
        '--  1 | 2',
        '-- prose below is not a row',
        'select 1 where false;',
        '-- (0 rows)',
        'delete from nowhere;',
        '-- ERROR:  relation "nowhere" does not exist…',
      ].join('\n'),
    );
    expect(statements.map((s) => [s.line, s.expect])).toEqual([
      [2, []],
      [3, [{ kind: 'value', value: 't' }]],
      [4, [{ kind: 'rows', rows: [['1', '2']] }]],
      [7, [{ kind: 'count', count: 0 }]],
      [9, [{ kind: 'error', message: 'relation "nowhere" does not exist' }]],
    ]);
    expect(() => splitStatements('select 1')).toThrow(/without a closing semicolon/);
  });

  it('reads permgraph commands and refuses other shell', () => {
    expect(parseShell('permgraph check alice "a doc" read   # => yes\n\n# a comment\nnpx permgraph verify   # exit 1')).toEqual([
      { line: 1, args: ['check', 'alice', 'a doc', 'read'], expectOutput: 'yes', expectExit: 0 },
      { line: 4, args: ['verify'], expectOutput: undefined, expectExit: 1 },
    ]);
    expect(() => parseShell('npm start')).toThrow(/only permgraph commands/);
    expect(() => parseShell('permgraph list alice | head')).toThrow(/not supported/);
  });

  it('reads the stated output of a program', () => {
    expect(statedOutput("console.log(await pg.check('a', 'b', 1));   // true\nconsole.log(x);\nconsole.log(y); // 3")).toEqual(['true', '3']);
  });

  it('renames the roles a document creates', () => {
    const blocks = parseBlocks(`${fence}sql\ncreate role app_web login;\ngrant permgraph_reader to app_web;\n${fence}`);
    const { blocks: renamed, renamed: names } = renameRoles(blocks, createdRoles(blocks));
    const name = names.get('app_web')!;
    expect(name).toMatch(/^app_web_[0-9a-f]{6}$/);
    expect(renamed[0]!.code).toBe(`create role ${name} login;\ngrant permgraph_reader to ${name};`);
  });
});

describe('running SQL', async () => {
  const { url } = await createTestDatabase();
  const session = new SqlSession(url);
  await session.open();
  afterAll(() => session.close());
  const run = (code: string) => session.run(splitStatements(code), (s) => `line ${s.line}`);

  it('passes when the stated results hold', async () => {
    expect(await run("select 1 as a, 'x' as b, true as c;\n--  1 | x | t\nselect 2 > 1;   -- true\nselect 1 where false;\n-- (0 rows)")).toBe(3);
  });

  it('fails on a wrong row, a wrong value, a wrong count, an unexpected error and an error that does not come', async () => {
    await expect(run('select 1, 2;\n--  1 | 3')).rejects.toThrow(/line 1: rows differ/);
    await expect(run('select 1 > 2;   -- true')).rejects.toThrow(/expected t, got f/);
    await expect(run('select 1;\n-- (2 rows)')).rejects.toThrow(/expected 2 row/);
    await expect(run('select * from nowhere;')).rejects.toThrow(/failed: relation "nowhere" does not exist/);
    await expect(run('select 1;\n-- ERROR:  something')).rejects.toThrow(/but the statement succeeded/);
    await expect(run('select * from nowhere;\n-- ERROR:  something else')).rejects.toThrow(/expected the error "something else…"/);
  });

  it('leaves no transaction or role behind after a failure', async () => {
    await expect(run('begin;\nset local role pg_monitor;\nselect 1;\n--  2')).rejects.toThrow(/rows differ/);
    expect(await run('select current_user = session_user;   -- true\nselect 1;\n--  1')).toBe(2);
  });
});
