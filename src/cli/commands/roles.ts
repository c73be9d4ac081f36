import type { Command } from 'commander';
import { action, actorOption, requireSchema } from '../action.ts';
import { describeChange } from '../format.ts';

/** roles sync: the catalog of named roles and operations (src/app/catalog.ts). */
export function registerRolesCommands(program: Command): void {
  const roles = program.command('roles').description('the catalog of named roles and operations');

  roles
    .command('sync')
    .description(
      'make permgraph.roles and permgraph.operations equal to FILE (JSON: {"roles": {"viewer": 1}, "operations": {"document.read": 1}}); prints the changes',
    )
    .argument('<file>', 'catalog file (JSON)')
    .option('--dry-run', 'print the changes without applying them')
    .addOption(actorOption())
    .exitOverride() // usage errors reach main(), which exits 2 like every other command
    .action(
      action<{ dryRun?: boolean; actor?: string }>(program, async (ctx, options, [file]) => {
        const { loadCatalogFile, syncRoles } = await import('../../app/catalog.ts'); // loaded lazily: see core.ts
        // Validate the file before touching the database: a malformed catalog changes nothing.
        const catalog = await loadCatalogFile(file!);
        await requireSchema(ctx);
        const result = await syncRoles(ctx.db, catalog, { dryRun: options.dryRun ?? false, actor: options.actor });
        if (ctx.options.json) return ctx.emitJson(result);
        for (const change of result.changes) ctx.say(describeChange(change));
        const count = result.changes.length;
        if (count === 0) ctx.say('no changes');
        else ctx.say(result.dryRun ? `dry run: ${count} change(s) not applied` : `applied ${count} change(s)`);
      }),
    );
}
