import type { Command } from 'commander';
import { registerCoreCommands } from './core.ts';
import { registerWorkerCommands } from './worker.ts';

/** Every permgraph subcommand; each module registers its own. */
export function registerCommands(program: Command): void {
  registerCoreCommands(program);
  registerWorkerCommands(program);
}
