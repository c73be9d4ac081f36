// Streaming CSV reading for `permgraph import`: RFC 4180 (csv-parse), a
// checked header, and the starting line of every record for error reports.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { parse } from 'csv-parse';
import { InvalidInputError } from '../errors.ts';

export interface CsvRecord {
  /** 1-based index among data records (the header is not counted): the resume key. */
  index: number;
  /** Line of the file where the record starts (1 = the header). */
  line: number;
  /** Field values by column name; a column absent from the header is undefined. */
  fields: Record<string, string | undefined>;
  /** Bytes of the file consumed so far (for progress). */
  bytes: number;
}

export interface CsvShape {
  /** Columns every file must have, in any order. */
  required: readonly string[];
  /** Columns a file may also have. */
  optional: readonly string[];
}

export interface CsvFile {
  path: string;
  columns: string[];
  size: number;
  /** The data records, from the one after `skip` on. */
  records(skip?: number): AsyncGenerator<CsvRecord>;
}

/** Opens a CSV file and checks its header; malformed content fails while reading, naming the line. */
export async function openCsv(path: string, shape: CsvShape): Promise<CsvFile> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (error) {
    throw new InvalidInputError(`cannot read ${path}: ${(error as Error).message}`);
  }
  const columns = await readHeader(path);
  const known = new Set([...shape.required, ...shape.optional]);
  const expected = `${shape.required.join(',')}${shape.optional.map((c) => `[,${c}]`).join('')}`;
  const missing = shape.required.filter((c) => !columns.includes(c));
  const unknown = columns.filter((c) => !known.has(c));
  const repeated = columns.filter((c, i) => columns.indexOf(c) !== i);
  if (missing.length || unknown.length || repeated.length) {
    const what = [
      missing.length ? `missing ${missing.join(', ')}` : '',
      unknown.length ? `unknown ${unknown.map((c) => JSON.stringify(c)).join(', ')}` : '',
      repeated.length ? `repeated ${repeated.join(', ')}` : '',
    ].filter(Boolean);
    throw new InvalidInputError(`${path}: header must be ${expected}, got "${columns.join(',')}" (${what.join('; ')})`);
  }
  return { path, columns, size, records: (skip = 0) => readRecords(path, columns, skip) };
}

function parser() {
  // Strict RFC 4180: bad quoting and rows with the wrong number of fields are errors.
  return parse({ bom: true, info: true, relax_column_count: false, skip_empty_lines: false });
}

async function readHeader(path: string): Promise<string[]> {
  const stream = createReadStream(path);
  try {
    for await (const { record } of stream.pipe(parser()) as AsyncIterable<{ record: string[] }>) {
      return record.map((c) => c.trim());
    }
  } catch (error) {
    throw malformed(path, error);
  } finally {
    stream.destroy();
  }
  throw new InvalidInputError(`${path} is empty: expected a header line`);
}

async function* readRecords(path: string, columns: string[], skip: number): AsyncGenerator<CsvRecord> {
  const stream = createReadStream(path);
  let previousEnd = 0;
  let index = -1; // the header is record 0
  try {
    for await (const { record, info } of stream.pipe(parser()) as AsyncIterable<{ record: string[]; info: { lines: number; bytes: number } }>) {
      const line = previousEnd + 1;
      previousEnd = info.lines;
      index += 1;
      if (index === 0 || index <= skip) continue;
      const fields: Record<string, string | undefined> = {};
      columns.forEach((column, i) => (fields[column] = record[i]));
      yield { index, line, fields, bytes: info.bytes };
    }
  } catch (error) {
    throw malformed(path, error);
  } finally {
    stream.destroy();
  }
}

function malformed(path: string, error: unknown): Error {
  if (error instanceof InvalidInputError) return error;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('CSV_')) {
    return new InvalidInputError(`malformed CSV in ${path}: ${(error as Error).message}`);
  }
  if (typeof code === 'string' && (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR')) {
    return new InvalidInputError(`cannot read ${path}: ${(error as Error).message}`);
  }
  return error as Error;
}
