// Streaming CSV reading for `permgraph import`: strict RFC 4180 with a
// checked header, and exact positions: every record carries the line it
// starts on, and malformed content is reported at the line and field where
// it happens (an unclosed quote at the line where it opened, not at the end
// of the file). Parsed here rather than with a library: a hand-written loop
// reads ~10x faster than csv-parse with record positions on, and the
// import's speed starts with reading its input.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { InvalidInputError } from '../errors.ts';

export interface CsvRecord {
  /** 1-based index among data records (the header is not counted): the resume key. */
  index: number;
  /** Line of the file where the record starts (1 = the header). */
  line: number;
  /** Field values in the order of CsvFile.columns. */
  values: string[];
  /** Bytes of the file read so far (for progress). */
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
  /** The header's column names, in file order. */
  columns: string[];
  size: number;
  /** The data records, from the one after `skip` on, in batches (one per chunk of the file read). */
  records(skip?: number): AsyncGenerator<CsvRecord[]>;
}

/** Malformed CSV: names the file, the line and (when it applies) the field. */
export class CsvSyntaxError extends InvalidInputError {
  override name = 'CsvSyntaxError';
  constructor(
    readonly file: string,
    readonly line: number,
    readonly field: number | null,
    readonly reason: string,
  ) {
    super(`malformed CSV in ${file} line ${line}${field === null ? '' : `, field ${field}`}: ${reason}`);
  }
}

/** Opens a CSV file and checks its header; malformed content fails while reading, naming the line. */
export async function openCsv(path: string, shape: CsvShape): Promise<CsvFile> {
  let size: number;
  try {
    const found = await stat(path);
    // (a pipe, /dev/stdin or <(…), is read once: the header's read took the
    // start of it, and the records' read lost it, rows and all, yet loaded
    // the rest; and a resume reads the file again from its start)
    if (!found.isFile()) {
      throw new InvalidInputError(`cannot read ${path}: not a regular file (a pipe?); an import reads its files more than once (the header, the rows, and again to resume), so save the input to a file first`);
    }
    size = found.size;
  } catch (error) {
    if (error instanceof InvalidInputError) throw error;
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

async function readHeader(path: string): Promise<string[]> {
  for await (const [first] of parseFile(path, null)) if (first) return first.values.map((c) => c.trim());
  throw new InvalidInputError(`${path} is empty: expected a header line`);
}

async function* readRecords(path: string, columns: string[], skip: number): AsyncGenerator<CsvRecord[]> {
  let index = -1; // the header is record 0
  for await (const parsed of parseFile(path, columns.length)) {
    const batch: CsvRecord[] = [];
    for (const record of parsed) {
      index += 1;
      if (index === 0 || index <= skip) continue;
      batch.push({ index, line: record.line, values: record.values, bytes: record.bytes });
    }
    if (batch.length) yield batch;
  }
}

/**
 * Bytes read (and parsed) at a time: small enough that parsing one chunk
 * holds the event loop for a few milliseconds only, while the import writes
 * the previous batch (staging.ts).
 */
const READ_CHUNK = 1 << 16;

/**
 * The longest record read (characters). A valid one is a few kB at most (an
 * id is at most 256 characters, a source 1,024; a longer value is an invalid
 * row, reported as such), and an incomplete record is parsed again with each
 * chunk read: an unclosed quote near the start of a large file made the read
 * quadratic, minutes before it said so.
 */
const MAX_RECORD_CHARS = 1 << 20;

/** The replacement character U+FFFD, as text and as UTF-8 bytes. */
const REPLACEMENT = '\ufffd';
const REPLACEMENT_BYTES = Buffer.from(REPLACEMENT, 'utf8');

const QUOTE = 34;
const COMMA = 44;
const LF = 10;
const CR = 13;

interface Parsed {
  line: number;
  values: string[];
  bytes: number;
}

/**
 * The records of a file: fields separated by commas, records by LF, CRLF or
 * CR; a field that starts with a quote runs to the matching quote, with ""
 * for a quote inside; empty lines are skipped. Every record after the first
 * must have `width` fields (the header's count); null: the first record only.
 */
async function* parseFile(path: string, width: number | null): AsyncGenerator<Parsed[]> {
  const stream = createReadStream(path, { highWaterMark: READ_CHUNK });
  const utf8 = new Utf8Check(path);
  let carry = ''; // the start of a record the previous chunk ended in
  let line = 1; // line where `carry` starts
  let first = true;
  try {
    for await (const bytes of stream as AsyncIterable<Buffer>) {
      let text = carry + utf8.decode(bytes, carry, line);
      if (first && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      first = false;
      const state = { line, records: [] as Parsed[] };
      const rest = parseRecords(path, text, false, state, width, stream.bytesRead);
      carry = text.slice(rest);
      line = state.line;
      if (carry.length > MAX_RECORD_CHARS) {
        throw new CsvSyntaxError(path, line, null,
          `the record starting here runs past ${MAX_RECORD_CHARS.toLocaleString('en-US')} characters: a quote never closed, or a value far longer than any valid one (an id is at most 256 characters, a source 1,024)`);
      }
      if (state.records.length) yield state.records;
      if (width === null && state.records.length) return;
    }
    const tail = utf8.end(carry, line);
    const state = { line, records: [] as Parsed[] };
    parseRecords(path, carry + tail, true, state, width, stream.bytesRead);
    if (state.records.length) yield state.records;
  } catch (error) {
    if (error instanceof InvalidInputError) throw error;
    const code = (error as { code?: unknown }).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') throw new InvalidInputError(`cannot read ${path}: ${(error as Error).message}`);
    throw error;
  } finally {
    stream.destroy();
  }
}

/**
 * Decodes a file's bytes as UTF-8, refusing bytes that are no UTF-8 (Node's
 * decoder writes U+FFFD for them, and a Latin-1 file was loaded with its
 * accented letters replaced, two ids becoming one). A U+FFFD the file holds
 * as such is fine: the decoded ones are counted against the file's own
 * (EF BF BD), and the first one past them is reported at its line.
 */
class Utf8Check {
  private readonly decoder = new StringDecoder('utf8');
  private last = Buffer.alloc(0); // the end of the previous chunk, for an EF BF BD across the boundary
  private inFile = 0;
  private decoded = 0;

  constructor(private readonly path: string) {}

  /** The text of the next chunk; `before` (starting at line `line`) is the text decoded before it and not parsed yet. */
  decode(bytes: Buffer, before: string, line: number): string {
    const joined = Buffer.concat([this.last, bytes]);
    // (one that ended the previous chunk left at most its last two bytes in `last`: none is counted twice)
    for (let at = joined.indexOf(REPLACEMENT_BYTES); at >= 0; at = joined.indexOf(REPLACEMENT_BYTES, at + 3)) this.inFile += 1;
    this.last = Buffer.from(joined.subarray(Math.max(0, joined.length - 2)));
    return this.check(this.decoder.write(bytes), before, line);
  }

  /** What the decoder still held at the end of the file (an incomplete character). */
  end(before: string, line: number): string {
    return this.check(this.decoder.end(), before, line);
  }

  private check(text: string, before: string, line: number): string {
    for (let at = text.indexOf(REPLACEMENT); at >= 0; at = text.indexOf(REPLACEMENT, at + 1)) {
      this.decoded += 1;
      if (this.decoded > this.inFile) {
        throw new CsvSyntaxError(this.path, lineOf(before + text, before.length + at, line), null,
          'bytes that are not UTF-8 text: the file must be UTF-8 (convert it first, e.g. iconv -f latin1 -t utf-8)');
      }
    }
    return text;
  }
}

/** The line of position `at` of `text`, which starts at line `line` (LF, CRLF and CR end a line). */
function lineOf(text: string, at: number, line: number): number {
  let n = line;
  for (let p = 0; p < at; p++) {
    const c = text.charCodeAt(p);
    if (c === LF || (c === CR && text.charCodeAt(p + 1) !== LF)) n += 1;
  }
  return n;
}

/**
 * Parses the complete records of `text` into state.records and returns the
 * offset where an incomplete one starts (text.length if none). With `final`,
 * the text ends the file: a record without a line break is complete, and an
 * open quote is an error.
 */
function parseRecords(
  path: string,
  text: string,
  final: boolean,
  state: { line: number; records: Parsed[] },
  width: number | null,
  bytes: number,
): number {
  const n = text.length;
  let pos = 0;
  let line = state.line;
  while (pos < n) {
    const start = pos;
    const startLine = line;
    const c0 = text.charCodeAt(pos);
    if (c0 === LF || c0 === CR) {
      // an empty line
      if (c0 === CR && pos + 1 >= n && !final) break;
      pos += c0 === CR && text.charCodeAt(pos + 1) === LF ? 2 : 1;
      line += 1;
      continue;
    }
    const values: string[] = [];
    let complete = false;
    let lineStart = lineStartOf(text, pos);
    for (;;) {
      // one field, starting at pos
      let value: string;
      if (text.charCodeAt(pos) === QUOTE) {
        const openLine = line;
        const openColumn = pos - lineStart + 1;
        let p = pos + 1;
        let parts: string | null = null;
        let from = p;
        let closed = false;
        while (p < n) {
          const c = text.charCodeAt(p);
          if (c === QUOTE) {
            if (text.charCodeAt(p + 1) === QUOTE) {
              parts = (parts ?? '') + text.slice(from, p + 1);
              p += 2;
              from = p;
              continue;
            }
            if (p + 1 >= n && !final) break; // a "" may straddle the chunk boundary
            closed = true;
            break;
          }
          if (c === LF || (c === CR && text.charCodeAt(p + 1) !== LF)) {
            line += 1;
            lineStart = p + 1;
          }
          p += 1;
        }
        if (!closed) {
          if (!final) return rewind(state, start, startLine);
          throw new CsvSyntaxError(path, openLine, values.length + 1, `the quote opened at column ${openColumn} is never closed`);
        }
        value = (parts ?? '') + text.slice(from, p);
        pos = p + 1;
        const next = pos < n ? text.charCodeAt(pos) : -1;
        if (next !== COMMA && next !== LF && next !== CR && next !== -1) {
          throw new CsvSyntaxError(
            path,
            line,
            values.length + 1,
            `unexpected ${describeChar(text, pos)} after the closing quote at column ${pos - lineStart} (a quote inside a quoted field is written "")`,
          );
        }
      } else {
        let p = pos;
        while (p < n) {
          const c = text.charCodeAt(p);
          if (c === COMMA || c === LF || c === CR) break;
          if (c === QUOTE) {
            throw new CsvSyntaxError(
              path,
              line,
              values.length + 1,
              `a quote at column ${p - lineStart + 1} inside an unquoted field (quote the whole field and write a quote inside it as "")`,
            );
          }
          p += 1;
        }
        value = text.slice(pos, p);
        pos = p;
      }
      values.push(value);
      if (pos >= n) {
        if (!final) return rewind(state, start, startLine);
        complete = true;
        break;
      }
      const c = text.charCodeAt(pos);
      if (c === COMMA) {
        pos += 1;
        if (pos >= n && !final) return rewind(state, start, startLine);
        continue;
      }
      // a line break ends the record
      if (c === CR) {
        if (pos + 1 >= n && !final) return rewind(state, start, startLine);
        pos += text.charCodeAt(pos + 1) === LF ? 2 : 1;
      } else {
        pos += 1;
      }
      line += 1;
      complete = true;
      break;
    }
    if (complete) {
      if (width !== null && values.length !== width) {
        throw new CsvSyntaxError(path, startLine, null, `${values.length} field(s), expected ${width} as in the header`);
      }
      state.records.push({ line: startLine, values, bytes });
      if (width === null) {
        state.line = line;
        return pos;
      }
    }
  }
  state.line = line;
  return pos;
}

/** Stops at an incomplete record: the next chunk continues from its start. */
function rewind(state: { line: number }, start: number, startLine: number): number {
  state.line = startLine;
  return start;
}

function lineStartOf(text: string, pos: number): number {
  let p = pos;
  while (p > 0) {
    const c = text.charCodeAt(p - 1);
    if (c === LF || c === CR) break;
    p -= 1;
  }
  return p;
}

function describeChar(text: string, pos: number): string {
  const c = text[pos]!;
  return /[\x00-\x1f\x7f]/.test(c) ? `character 0x${c.charCodeAt(0).toString(16).padStart(2, '0')}` : `character ${JSON.stringify(c)}`;
}
