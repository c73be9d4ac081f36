// The reference documents cannot drift from the code: docs/cli.md documents
// every command and flag the CLI registers, docs/api.md names every export and
// every method of the client, and no link in README.md or docs/ points at a
// file (or a heading) that is not in the repository.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { registerCommands } from '../../src/cli/commands/index.ts';
import { Permgraph } from '../../src/client.ts';
import * as api from '../../src/index.ts';
import { REPO } from './doctest.ts';

const read = (file: string) => readFileSync(path.join(REPO, file), 'utf8');

/** The text under a heading, up to the next heading of the same or a higher level. */
function section(markdown: string, heading: string): string | undefined {
  const lines = markdown.split('\n');
  const start = lines.findIndex((line) => /^#+ /.test(line) && line.replace(/^#+ /, '').trim() === heading);
  if (start === -1) return undefined;
  const level = /^#+/.exec(lines[start]!)![0].length;
  const end = lines.findIndex((line, i) => i > start && /^#+ /.test(line) && /^#+/.exec(line)![0].length <= level);
  return lines.slice(start, end === -1 ? undefined : end).join('\n');
}

describe('docs/cli.md documents every command and flag', () => {
  const program = new Command('permgraph');
  program.option('--database-url <url>').option('--log-level <level>').option('--json');
  registerCommands(program);
  const doc = read('docs/cli.md');

  const leaves: { name: string; command: Command }[] = [];
  for (const command of program.commands) {
    if (command.commands.length) for (const sub of command.commands) leaves.push({ name: `${command.name()} ${sub.name()}`, command: sub });
    else leaves.push({ name: command.name(), command });
  }

  it('the global options', () => {
    for (const flag of ['--database-url', '--log-level', '--json']) expect(doc, flag).toContain(`\`${flag}`);
  });

  for (const { name, command } of leaves) {
    it(name, () => {
      const text = section(doc, name);
      expect(text, `docs/cli.md has no heading "### ${name}"`).toBeDefined();
      expect(text, `the section of ${name} shows how to call it`).toContain(`permgraph ${name}`);
      for (const option of command.options) {
        if (option.long === '--help') continue;
        expect(text, `docs/cli.md, section ${name}, does not mention ${option.long}`).toContain(option.long);
      }
    });
  }
});

describe('docs/api.md names every export and every client method', () => {
  const doc = read('docs/api.md');

  it('every runtime export of src/index.ts', () => {
    const missing = Object.keys(api).filter((name) => !doc.includes(name));
    expect(missing, 'exports docs/api.md does not mention').toEqual([]);
  });

  it('every public method of Permgraph', () => {
    // From the source: TypeScript's `private` leaves no trace at run time.
    const source = read('src/client.ts');
    const declarations = [...source.matchAll(/^ {2}((?:private |static |async |get |readonly )*)([A-Za-z]\w*)[<(]/gm)]
      .filter(([, modifiers]) => !modifiers!.includes('private'))
      .map(([, modifiers, name]) => (modifiers!.includes('static') ? `Permgraph.${name}` : `pg.${name}`));
    expect(declarations.length).toBeGreaterThan(30);
    for (const name of Object.getOwnPropertyNames(Permgraph.prototype)) {
      if (name !== 'constructor') expect(source, `${name} is declared in src/client.ts`).toMatch(new RegExp(`^ {2}[a-z ]*${name}[<(]`, 'm'));
    }
    expect(declarations.filter((name) => !doc.includes(name)), 'client methods docs/api.md does not document').toEqual([]);
  });
});

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
function anchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/`/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const heading = !fenced && /^#{1,6} (.*)$/.exec(line);
    if (heading) anchors.add(anchor(heading[1]!));
  }
  return anchors;
}

describe('links in README.md and docs/ stay inside the repository and resolve', () => {
  const documents = ['README.md', ...readdirSync(path.join(REPO, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

  for (const document of documents) {
    it(document, () => {
      const text = read(document).replace(/```[\s\S]*?```/g, '');
      const problems: string[] = [];
      for (const match of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = match[1]!;
        if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
        const [file, hash] = target.split('#') as [string, string | undefined];
        const resolved = file === '' ? path.join(REPO, document) : path.resolve(path.dirname(path.join(REPO, document)), file);
        if (!resolved.startsWith(REPO)) {
          problems.push(`${target}: outside the repository`);
          continue;
        }
        if (!existsSync(resolved)) {
          problems.push(`${target}: no such file`);
          continue;
        }
        if (hash && resolved.endsWith('.md') && !anchorsOf(readFileSync(resolved, 'utf8')).has(hash)) {
          problems.push(`${target}: no heading with that anchor`);
        }
      }
      expect(problems).toEqual([]);
    });
  }

  it('nothing in the repository points at the specification outside it', () => {
    // A walk rather than `git ls-files`: the suite also runs on exported trees without .git.
    const skip = new Set(['node_modules', '.git', 'dist', '.permgraph', 'results']);
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const entry of readdirSync(path.join(REPO, dir), { withFileTypes: true })) {
        const file = path.join(dir, entry.name);
        if (entry.isDirectory()) {
          if (!skip.has(entry.name)) walk(file);
        } else if (/\.(ts|mts|mjs|js|json|md|sql|sh|yml|yaml)$/.test(entry.name) && file !== path.join('test', 'docs', 'reference.test.ts')) {
          files.push(file);
        }
      }
    };
    walk('.');
    expect(files.length).toBeGreaterThan(100);
    const offenders = files.filter((file) => {
      const text = readFileSync(path.join(REPO, file), 'utf8');
      return text.includes('shared/spec') || text.includes('../shared/');
    });
    expect(offenders).toEqual([]);
  });
});
