import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { Page } from '../../app/listing.ts';
import { parsePositionedJson } from '../../app/positioned-json.ts';
import type { DesiredGrant } from '../../app/sync-grants.ts';
import { DEFAULT_GRANT_SOURCE, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT } from '../../constants.ts';
import { InvalidInputError } from '../../errors.ts';
import { parseDuration, parseExactMoment } from '../../expiry.ts';
import type { NodeKind } from '../../types.ts';

// The implementations are imported inside each action: see core.ts.
import { action, actorOption, checkFlag, ExitCode, pageSize, requireSchema } from '../action.ts';
import type { CommandContext } from '../context.ts';
import { describeGrant, formatExplanation, formatListedLevel, levelName } from '../format.ts';
import { exactMoments } from '../json.ts';

interface PageFlags {
  level: string;
  limit?: string;
  after?: string;
}

/** list, who, explain, grant, revoke, sync-grants: the application-facing operations. */
export function registerAppCommands(program: Command): void {
  program
    .command('list')
    .description('the nodes USER may act on at --level (trashed ones hidden), by id, one page at a time')
    .argument('<user>', 'the user (a node of kind user)')
    .option('--level <level>', '1|2|3 or read|write|manage', 'read')
    .option('--kind <kind>', 'only nodes of this kind: user|group|object')
    .option('--limit <n>', `page size, at most ${MAX_PAGE_LIMIT}`, String(DEFAULT_PAGE_LIMIT))
    .option('--after <cursor>', 'the cursor printed by the previous page')
    .action(
      action<PageFlags & { kind?: string }>(program, async (ctx, options, [user]) => {
        await requireSchema(ctx);
        const { listTargets } = await import('../../app/listing.ts');
        const page = await listTargets(ctx.db, user!, {
          level: options.level,
          kind: options.kind as NodeKind | undefined,
          limit: pageSize(options.limit ?? String(DEFAULT_PAGE_LIMIT), '--limit'),
          after: options.after,
        });
        printPage(ctx, page, (item) => `${item.id}\t${item.kind}\t${formatListedLevel(item)}`);
      }),
    );

  program
    .command('who')
    .description('the users who may act on TARGET at --level (directly or through its owner), by id, one page at a time')
    .argument('<target>', 'the node asked about')
    .option('--level <level>', '1|2|3 or read|write|manage', 'read')
    .option('--limit <n>', `page size, at most ${MAX_PAGE_LIMIT}`, String(DEFAULT_PAGE_LIMIT))
    .option('--after <cursor>', 'the cursor printed by the previous page')
    .action(
      action<PageFlags>(program, async (ctx, options, [target]) => {
        await requireSchema(ctx);
        const { listUsers } = await import('../../app/listing.ts');
        const page = await listUsers(ctx.db, target!, {
          level: options.level,
          limit: pageSize(options.limit ?? String(DEFAULT_PAGE_LIMIT), '--limit'),
          after: options.after,
        });
        printPage(ctx, page, (item) => `${item.id}\t${formatListedLevel(item)}`);
      }),
    );

  program
    .command('explain')
    .description(
      'why USER may (or may not) act on THING: the strongest path, or the reason there is none ' +
        '(and, when grants that have expired gave the access, which ones and when it ended); exit 0 either way. ' +
        'It reads the current grants and owners: when changes are pending, it says so (check and list answer from the permission table, which may not reflect them yet)',
    )
    .argument('<user>', 'the user (a node of kind user)')
    .argument('<thing>', 'the node asked about')
    .option('--level <level>', 'the level asked about: 1|2|3 or read|write|manage (default: any)')
    .action(
      action<{ level?: string }>(program, async (ctx, options, [user, thing]) => {
        await requireSchema(ctx);
        const { explain } = await import('../../app/explain.ts');
        const explanation = await explain(ctx.db, user!, thing!, options.level ?? null);
        if (ctx.options.json) return ctx.emitJson(exactMoments(explanation));
        for (const line of formatExplanation(explanation)) ctx.say(line);
      }),
    );

  program
    .command('grant')
    .description('grant TAIL (a user or group) LEVEL on HEAD from --source, optionally until a time (re-granting sets the level and the expiry anew)')
    .argument('<tail>', 'who receives the grant: a user or a group')
    .argument('<head>', 'the node granted: a user, group or object')
    .argument('<level>', '1|2|3, read|write|manage, or a role from the catalog')
    .option('--source <source>', 'the grant source', DEFAULT_GRANT_SOURCE)
    .option('--expires <time>', 'the grant ends at TIME, an ISO 8601 timestamp with a time zone, e.g. 2030-01-31T18:00:00Z (default: never)')
    .option('--expires-in <duration>', 'the grant ends DURATION from now (the database\'s clock): digits and a unit s, m, h or d, e.g. 90m, 12h, 7d, 1d12h')
    .addOption(actorOption())
    .action(
      action<{ source: string; expires?: string; expiresIn?: string; actor?: string }>(program, async (ctx, options, [tail, head, levelArg]) => {
        checkExpiryFlags(options);
        await requireSchema(ctx);
        const { writeGrant } = await import('../../app/grants.ts');
        const { level, expiresAt, expiresAtExact, token } = await writeGrant(ctx.db, tail!, head!, levelArg!, {
          source: options.source,
          expiresAt: options.expires,
          expiresIn: options.expiresIn,
          actor: options.actor,
        });
        if (ctx.options.json) ctx.emitJson(exactMoments({ tail, head, level, source: options.source, expiresAt, expiresAtExact, token }));
        ctx.say(`granted ${describeGrant({ tail: tail!, head: head!, level, source: options.source, expiresAtExact })}; token ${token}`);
      }),
    );

  program
    .command('revoke')
    .description('remove the grant TAIL -> HEAD of --source (other sources\' grants stay)')
    .argument('<tail>', 'the user or group holding the grant')
    .argument('<head>', 'the node granted')
    .option('--source <source>', 'the grant source', DEFAULT_GRANT_SOURCE)
    .addOption(actorOption())
    .action(
      action<{ source: string; actor?: string }>(program, async (ctx, options, [tail, head]) => {
        await requireSchema(ctx);
        const { revokeGrant } = await import('../../app/grants.ts');
        const { revoked, token } = await revokeGrant(ctx.db, tail!, head!, { source: options.source, actor: options.actor });
        if (ctx.options.json) ctx.emitJson({ tail, head, source: options.source, revoked, token });
        ctx.say(revoked ? `revoked ${tail} -> ${head} (source ${options.source}); token ${token}` : `no grant ${tail} -> ${head} from source ${options.source}: nothing to revoke`);
      }),
    );

  program
    .command('sync-grants')
    .description('make the grants of SOURCE exactly those in FILE (a JSON array of {"tail", "head", "level"[, "expiresAt"]}), in one transaction')
    .argument('<source>', 'the grant source to replace, e.g. ldap (other sources\' grants stay)')
    .argument('<file>', 'JSON file: [{"tail": "alice", "head": "eng", "level": "write", "expiresAt": "2030-01-31T18:00:00Z"}, …] (expiresAt optional: never)')
    .addOption(actorOption())
    .action(
      action<{ actor?: string }>(program, async (ctx, options, [source, file]) => {
        await requireSchema(ctx);
        // syncGrants checks the shape of every entry and names the bad one.
        const desired = parseGrantsFile(file!, await readGrantsFile(file!)) as DesiredGrant[];
        const { syncGrants } = await import('../../app/sync-grants.ts');
        const result = await syncGrants(ctx.db, source!, desired, { actor: options.actor });
        if (ctx.options.json) ctx.emitJson({ source, ...result });
        ctx.say(`synced source ${source}: ${result.inserted} inserted, ${result.updated} updated, ${result.deleted} deleted; token ${result.token}`);
      }),
    );
}

/** --expires / --expires-in: malformed, or both, is a usage error (exit 2, one line naming the value); the library checks the rest. */
function checkExpiryFlags(flags: { expires?: string; expiresIn?: string }): void {
  if (flags.expires !== undefined && flags.expiresIn !== undefined) throw new ExitCode(2, 'give --expires or --expires-in, not both');
  if (flags.expires !== undefined) checkFlag(() => parseExactMoment(flags.expires, '--expires'));
  if (flags.expiresIn !== undefined) checkFlag(() => parseDuration(flags.expiresIn, '--expires-in'));
}

/** Items one per line (tab-separated), then how to get the next page. */
function printPage<T>(ctx: CommandContext, page: Page<T>, line: (item: T) => string): void {
  if (ctx.options.json) return ctx.emitJson(exactMoments(page));
  for (const item of page.items) ctx.say(line(item));
  if (page.next) ctx.say(`-- more: --after ${page.next}`);
}

async function readGrantsFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new InvalidInputError(`cannot read ${file}: ${(error as Error).message}`);
  }
}

function parseGrantsFile(file: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    // Where, as a file a person edits wants it: the strict parser of the
    // roles catalog finds the same error with its line and column.
    parsePositionedJson(text, (reason, at) => {
      throw new InvalidInputError(`${file}:${at.line}:${at.column}: not valid JSON: ${reason}`);
    });
    throw new InvalidInputError(`${file} is not valid JSON: ${(error as Error).message}`);
  }
}
