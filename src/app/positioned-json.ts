/**
 * A strict JSON parser (RFC 8259) that keeps the line and column of every key
 * and value. JSON.parse silently keeps the last of duplicate keys and reports
 * no positions; files people edit by hand (the roles catalog) deserve errors
 * that say where.
 */

export interface SourcePosition {
  line: number;
  column: number;
}

export type JsonNode =
  | { kind: 'object'; at: SourcePosition; entries: { key: string; keyAt: SourcePosition; value: JsonNode }[] }
  | { kind: 'array'; at: SourcePosition; items: JsonNode[] }
  | { kind: 'string'; at: SourcePosition; value: string }
  | { kind: 'number'; at: SourcePosition; value: number }
  | { kind: 'boolean'; at: SourcePosition; value: boolean }
  | { kind: 'null'; at: SourcePosition };

/** Reports a syntax error at a position; it must throw. */
export type JsonSyntaxFailure = (reason: string, at: SourcePosition) => never;

/** Parses a whole JSON document; `fail` is called (and throws) at the first syntax error. */
export function parsePositionedJson(text: string, fail: JsonSyntaxFailure): JsonNode {
  return new PositionedJsonParser(text, fail).parseDocument();
}

class PositionedJsonParser {
  private offset = 0;
  private readonly lineStarts: number[] = [0];

  constructor(
    private readonly text: string,
    private readonly onFailure: JsonSyntaxFailure,
  ) {
    for (let i = 0; i < text.length; i++) if (text[i] === '\n') this.lineStarts.push(i + 1);
  }

  parseDocument(): JsonNode {
    if (this.text.charCodeAt(0) === 0xfeff) this.offset = 1; // a byte-order mark is harmless
    this.skipSpace();
    const value = this.parseValue();
    this.skipSpace();
    if (this.offset < this.text.length) this.fail(`unexpected ${this.describeHere()} after the end of the JSON document`);
    return value;
  }

  positionOf(offset: number): SourcePosition {
    let low = 0;
    let high = this.lineStarts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (this.lineStarts[mid]! <= offset) low = mid;
      else high = mid - 1;
    }
    return { line: low + 1, column: offset - this.lineStarts[low]! + 1 };
  }

  private fail(reason: string, offset = this.offset): never {
    return this.onFailure(reason, this.positionOf(offset));
  }

  private describeHere(): string {
    return this.offset >= this.text.length ? 'end of file' : `character ${JSON.stringify(this.text[this.offset])}`;
  }

  private skipSpace(): void {
    while (this.offset < this.text.length && ' \t\r\n'.includes(this.text[this.offset]!)) this.offset++;
  }

  private parseValue(): JsonNode {
    const at = this.positionOf(this.offset);
    const c = this.text[this.offset];
    if (c === '{') return this.parseObject(at);
    if (c === '[') return this.parseArray(at);
    if (c === '"') return { kind: 'string', at, value: this.parseString() };
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return { kind: 'number', at, value: this.parseNumber() };
    for (const [word, node] of [
      ['true', { kind: 'boolean', at, value: true }],
      ['false', { kind: 'boolean', at, value: false }],
      ['null', { kind: 'null', at }],
    ] as const) {
      if (this.text.startsWith(word, this.offset)) {
        this.offset += word.length;
        return node;
      }
    }
    return this.fail(`expected a value, found ${this.describeHere()}`);
  }

  private parseObject(at: SourcePosition): JsonNode {
    this.offset++; // {
    const entries: { key: string; keyAt: SourcePosition; value: JsonNode }[] = [];
    this.skipSpace();
    if (this.text[this.offset] === '}') {
      this.offset++;
      return { kind: 'object', at, entries };
    }
    for (;;) {
      this.skipSpace();
      if (this.text[this.offset] !== '"') this.fail(`expected a quoted key, found ${this.describeHere()}`);
      const keyAt = this.positionOf(this.offset);
      const key = this.parseString();
      this.skipSpace();
      if (this.text[this.offset] !== ':') this.fail(`expected ":" after key ${JSON.stringify(key)}, found ${this.describeHere()}`);
      this.offset++;
      this.skipSpace();
      entries.push({ key, keyAt, value: this.parseValue() });
      this.skipSpace();
      const next = this.text[this.offset];
      this.offset++;
      if (next === '}') return { kind: 'object', at, entries };
      if (next !== ',') this.fail(`expected "," or "}" in an object, found ${next === undefined ? 'end of file' : JSON.stringify(next)}`, this.offset - 1);
    }
  }

  private parseArray(at: SourcePosition): JsonNode {
    this.offset++; // [
    const items: JsonNode[] = [];
    this.skipSpace();
    if (this.text[this.offset] === ']') {
      this.offset++;
      return { kind: 'array', at, items };
    }
    for (;;) {
      this.skipSpace();
      items.push(this.parseValue());
      this.skipSpace();
      const next = this.text[this.offset];
      this.offset++;
      if (next === ']') return { kind: 'array', at, items };
      if (next !== ',') this.fail(`expected "," or "]" in an array, found ${next === undefined ? 'end of file' : JSON.stringify(next)}`, this.offset - 1);
    }
  }

  private parseString(): string {
    const start = this.offset;
    this.offset++; // opening quote
    let value = '';
    for (;;) {
      const c = this.text[this.offset];
      if (c === undefined || c === '\n') this.fail('unterminated string', start);
      if (c === '"') {
        this.offset++;
        return value;
      }
      if (c < ' ') this.fail('control character in a string (escape it)');
      if (c !== '\\') {
        value += c;
        this.offset++;
        continue;
      }
      const escape = this.text[this.offset + 1];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (escape !== undefined && escape in simple) {
        value += simple[escape];
        this.offset += 2;
      } else if (escape === 'u' && /^[0-9a-fA-F]{4}$/.test(this.text.slice(this.offset + 2, this.offset + 6))) {
        value += String.fromCharCode(Number.parseInt(this.text.slice(this.offset + 2, this.offset + 6), 16));
        this.offset += 6;
      } else {
        this.fail(`invalid escape sequence in a string`);
      }
    }
  }

  private parseNumber(): number {
    const match = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this.text.slice(this.offset));
    if (!match) this.fail('invalid number');
    this.offset += match[0].length;
    return Number(match[0]);
  }
}
