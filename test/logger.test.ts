import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../src/logger.ts';

describe('silentLogger', () => {
  it('holds no writer on a file descriptor (pino\'s default opens one on stdout, flushed and fsynced at exit)', () => {
    const stream = (silentLogger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { fd?: number };
    expect(stream.fd).toBeUndefined();
    silentLogger.error('dropped');
    expect(silentLogger.level).toBe('silent');
  });
});
