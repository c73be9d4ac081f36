import { MAX_INTERVAL_MS } from '../constants.ts';
import { InvalidInputError } from '../errors.ts';

/** An interval option (ms): a positive integer a timer can hold, else InvalidInputError naming it. */
export function requireIntervalMs(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1 || value > MAX_INTERVAL_MS) {
    throw new InvalidInputError(`${name} must be a whole number of milliseconds from 1 to ${MAX_INTERVAL_MS} (about 24 days), got ${value}`);
  }
  return value;
}

/**
 * A level-triggered wake-up: notify() any number of times while the worker is
 * busy and the next wait() returns at once; otherwise wait() sleeps until a
 * notify() or its timeout (the polling backstop).
 */
export class Wakeup {
  private pending = false;
  private resolve: (() => void) | undefined;

  notify(): void {
    this.pending = true;
    this.resolve?.();
  }

  async wait(timeoutMs: number): Promise<void> {
    if (!this.pending) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.resolve = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.resolve = undefined;
    }
    this.pending = false;
  }
}
