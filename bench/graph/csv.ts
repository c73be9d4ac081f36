// The CSV pair: nodes.csv (id,kind,owner_id) and grants.csv
// (tail_id,head_id,level,source). RFC 4180 quoting; an empty owner_id is null.
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { once } from 'node:events';
import type { GrantRow, NodeRow } from './types.ts';

export const NODES_FILE = 'nodes.csv';
export const GRANTS_FILE = 'grants.csv';

function field(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/** Writes a header and lines, in 64 KiB chunks. */
export async function writeLines(file: string, header: string, lines: Iterable<string>): Promise<void> {
  const out = createWriteStream(file, { encoding: 'utf8' });
  let chunk = `${header}\n`;
  for (const line of lines) {
    chunk += `${line}\n`;
    if (chunk.length > 1 << 16) {
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  out.end(chunk);
  await once(out, 'finish');
}

function* nodeLines(nodes: readonly NodeRow[]): Generator<string> {
  for (const n of nodes) yield `${field(n.id)},${n.kind},${n.owner === null ? '' : field(n.owner)}`;
}

function* grantLines(grants: readonly GrantRow[]): Generator<string> {
  for (const g of grants) yield `${field(g.tail)},${field(g.head)},${g.level},${field(g.source)}`;
}

/** Writes dir/nodes.csv and dir/grants.csv; same rows in, same bytes out. */
export async function writeGraphCsv(dir: string, graph: { nodes: readonly NodeRow[]; grants: readonly GrantRow[] }): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeLines(path.join(dir, NODES_FILE), 'id,kind,owner_id', nodeLines(graph.nodes));
  await writeLines(path.join(dir, GRANTS_FILE), 'tail_id,head_id,level,source', grantLines(graph.grants));
}
