import type { Command } from 'commander';
import { registerAppCommands } from './app.ts';
import { registerCoreCommands } from './core.ts';
import { registerWorkerCommands } from './worker.ts';
import { registerRolesCommands } from './roles.ts';
import { registerOpsCommands } from './ops.ts';
import { registerChangesCommands } from './changes.ts';

/** Every permgraph subcommand; each module registers its own. */
export function registerCommands(program: Command): void {
  registerCoreCommands(program);
  registerAppCommands(program);
  registerWorkerCommands(program);
  registerRolesCommands(program);
  registerOpsCommands(program);
  registerChangesCommands(program);
}
