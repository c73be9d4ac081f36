import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ExitCode } from '../../src/cli/errors.ts';
import { formatLogLine, resolveLogFormat, textLogDestination } from '../../src/cli/log-format.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { collect, runCli, spawnCli, waitUntil } from '../helpers/cli.ts';

/** The local clock time of an epoch in ms, written out independently of the formatter. */
function clock(ms: number): string {
  const at = new Date(ms);
  return [at.getHours(), at.getMinutes(), at.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':') + '.' + String(at.getMilliseconds()).padStart(3, '0');
}

describe('log format', () => {
  const time = Date.UTC(2026, 11, 4, 12, 0, 39, 491);

  it('prints a pino entry as time, level, message and its own fields; the frame fields go', () => {
    const entry = { level: 40, time, pid: 7, hostname: 'vm', name: 'permgraph', msg: 'listener reconnecting', attempt: 2, dataDir: '/a b/c', role: 'active' };
    expect(formatLogLine(JSON.stringify(entry))).toBe(`${clock(time)} WARN  listener reconnecting attempt=2 dataDir="/a b/c" role=active`);
  });

  it('prints an error by its message, and its stack only at debug and below', () => {
    const err = { type: 'Error', message: 'connection lost', stack: 'Error: connection lost\n    at read' };
    expect(formatLogLine(JSON.stringify({ level: 50, time, msg: 'batch failed', err }))).toBe(`${clock(time)} ERROR batch failed err="connection lost"`);
    expect(formatLogLine(JSON.stringify({ level: 20, time, msg: 'batch failed', err }))).toBe(
      `${clock(time)} DEBUG batch failed err="connection lost"\n    Error: connection lost\n        at read`,
    );
  });

  it('passes a line that is not JSON through as it is', () => {
    expect(formatLogLine('plain words\n')).toBe('plain words');
  });

  it('formats what a pino logger writes to it, line by line', () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, textLogDestination((text) => void lines.push(text)));
    logger.info({ batch: { mode: 'incremental', rows: { inserted: 2, deleted: 0 }, ids: ['a', 'b'], none: {} } }, 'applied');
    logger.debug('not at this level');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  applied batch\.mode=incremental batch\.rows\.inserted=2 batch\.rows\.deleted=0 batch\.ids=\["a","b"\] batch\.none=\{\}\n$/);
  });

  it('defaults to text on a terminal and JSON elsewhere; anything but json or text is a usage error', () => {
    expect(resolveLogFormat(undefined, true)).toBe('text');
    expect(resolveLogFormat(undefined, false)).toBe('json');
    expect(resolveLogFormat('json', true)).toBe('json');
    expect(resolveLogFormat('text', false)).toBe('text');
    expect(() => resolveLogFormat('xml', false)).toThrow(new ExitCode(2, '--log-format must be json or text, got "xml"'));
  });

  describe('on the command line', async () => {
    const { url } = await createTestDatabase();

    /** The stderr of a worker run until it holds the applier role, then stopped by SIGTERM. */
    async function workerLogs(formatArgs: string[]): Promise<string[]> {
      const child = spawnCli(['--database-url', url, ...formatArgs, 'worker']);
      const done = collect(child);
      let stderr = '';
      child.stderr?.on('data', (chunk) => (stderr += chunk));
      await waitUntil(async () => stderr.includes('holding the applier role'), 'the worker to take the applier role');
      child.kill('SIGTERM');
      const result = await done;
      expect(result.code).toBe(0); // a clean stop
      return result.stderr.trim().split('\n');
    }

    it('--log-format text prints the worker\'s logs as text; without it (stderr not a terminal) they are JSON', async () => {
      const text = await workerLogs(['--log-format', 'text']);
      expect(text.length).toBeGreaterThanOrEqual(3); // listener, role, shutdown, stopped
      for (const line of text) expect(line).toMatch(/^\d\d:\d\d:\d\d\.\d{3} (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) /);
      expect(text.some((line) => / INFO  holding the applier role role=active$/.test(line))).toBe(true);
      const json = await workerLogs([]);
      expect(json.map((line) => JSON.parse(line).msg)).toContain('holding the applier role');
    });

    it('refuses an unknown format with exit status 2, naming the value', async () => {
      const result = await runCli(['--database-url', url, '--log-format', 'xml', 'status']);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('--log-format must be json or text, got "xml"');
    });
  });
});
