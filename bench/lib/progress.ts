// A minimal progress bar on stderr (no dependency). On a terminal it redraws
// one line; otherwise it prints a line at every 25% so logs stay short.

export interface Progress {
  tick(by?: number): void;
  done(note?: string): void;
}

const WIDTH = 28;

export function progress(label: string, total: number): Progress {
  const tty = process.stderr.isTTY === true;
  const started = performance.now();
  let current = 0;
  let lastQuarter = -1;
  const render = () => {
    const fraction = total > 0 ? Math.min(1, current / total) : 1;
    if (tty) {
      const filled = Math.round(fraction * WIDTH);
      const bar = '#'.repeat(filled) + '-'.repeat(WIDTH - filled);
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      process.stderr.write(`\r  ${label.padEnd(34)} [${bar}] ${current}/${total} ${secs}s`);
      return;
    }
    const quarter = Math.floor(fraction * 4);
    if (quarter !== lastQuarter) {
      lastQuarter = quarter;
      process.stderr.write(`  ${label}: ${Math.round(fraction * 100)}%\n`);
    }
  };
  render();
  return {
    tick(by = 1) {
      current += by;
      render();
    },
    done(note) {
      current = total;
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      if (tty) process.stderr.write(`\r  ${label.padEnd(34)} done in ${secs}s${note ? ` (${note})` : ''}`.padEnd(90) + '\n');
      else process.stderr.write(`  ${label}: done in ${secs}s${note ? ` (${note})` : ''}\n`);
    },
  };
}

/** A one-line status message on stderr. */
export function say(message: string): void {
  process.stderr.write(`${message}\n`);
}
