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
