// Text the CLI prints for people: the library returns data, and these turn
// it into lines. Type-only imports, so loading this module loads nothing else.
import type { AuditEntry } from '../app/audit.ts';
import type { CatalogChange } from '../app/catalog.ts';
import type { Explanation, PathEdge } from '../app/explain.ts';
import type { Level } from '../types.ts';

/**
 * Text an application stored (an actor, a grant's source), on one line:
 * control characters escaped, so that no value can start a line of its own
 * or a column of the tab-separated output.
 */
export function printable(text: string): string {
  const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  return text.replace(/[\u0000-\u001f\u007f]/g, (c) => named[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** "write", "read"…: the name of a level for people. */
export function levelName(level: number): string {
  return ['none', 'read', 'write', 'manage'][level] ?? String(level);
}

/**
 * A listed level, with the time it holds until when an expiry bounds it, to
 * the microsecond the database stores: `write` or `write until
 * 2030-01-31T18:00:00.000250Z`.
 */
export function formatListedLevel(item: { level: number; validUntilExact: string | null }): string {
  return item.validUntilExact === null ? levelName(item.level) : `${levelName(item.level)} until ${item.validUntilExact}`;
}

/** `alice -[write]-> eng (source ldap)`, with `until …` when the grant expires (the expiry written, to the microsecond). */
export function describeGrant(g: { tail: string; head: string; level: number; source: string; expiresAtExact: string | null }): string {
  return `${g.tail} -[${levelName(g.level)}]-> ${g.head} (source ${printable(g.source)}${g.expiresAtExact ? `, until ${g.expiresAtExact}` : ''})`;
}

/**
 * A human-readable account, one line per fact or edge. Its moments are
 * printed as the database stores them, to the microsecond (the …Exact
 * fields), so that they compare with the grants table.
 */
export function formatExplanation(e: Explanation): string[] {
  const lines: string[] = [];
  if (e.allowed) {
    const until = e.validUntilExact ? `, until ${e.validUntilExact}` : '';
    lines.push(`${e.user} may ${e.level === null ? levelName(e.bestLevel) : levelName(e.level)} ${e.thing} (best level: ${levelName(e.bestLevel)}${e.via === 'owner' ? ', through its owner' : e.via === 'superuser' ? ', as a superuser' : ''}${until})`);
  } else {
    const why =
      e.reason === 'trashed'
        ? `trashed since ${e.trashAtExact!}`
        : e.reason === 'level too low'
          ? `level too low (best: ${levelName(e.bestLevel)}${e.via === 'owner' ? ', through its owner' : ''})`
          : e.reason === 'expired'
            ? `access expired at ${e.expiredAtExact!} and awaits recomputation ` +
              (e.bestLevel >= (e.level ?? 1)
                ? `(refused until a worker recomputes the permission rows; the path below then gives ${levelName(e.bestLevel)})`
                : e.bestLevel === 0
                  ? '(the grants that gave it have ended: no path is left)'
                  : `(the grants that gave it have ended: what is left gives ${levelName(e.bestLevel)})`)
            : 'no path';
    lines.push(`${e.user} may not ${e.level === null ? 'access' : levelName(e.level)} ${e.thing}: ${why}`);
  }
  const edges = (path: PathEdge[]) =>
    path.map((p) => `  ${p.tail} -[${levelName(p.level)}, ${printable(p.source)}${p.expiresAtExact ? `, until ${p.expiresAtExact}` : ''}]-> ${p.head}`);
  const ended = e.accessEnded;
  if (ended) {
    // which expired grant(s) ended the access, and those of the same route that expired after
    const named = (g: PathEdge) => `${printable(g.tail)} -[${levelName(g.level)}]-> ${printable(g.head)} (source ${printable(g.source)})`;
    // (endedBy: counted by the database to the microsecond, as the moments are printed)
    const first = ended.expiredGrants.slice(0, ended.endedBy);
    const later = ended.expiredGrants.slice(ended.endedBy);
    const what = e.level === null ? 'access' : `${levelName(ended.level)} access`;
    lines.push(`${what} ended at ${ended.atExact}, when grant${first.length > 1 ? 's' : ''} ${first.map(named).join(' and ')} expired`);
    if (later.length) lines.push(`also expired on that route since: ${later.map((g) => `grant ${named(g)} at ${g.expiresAtExact!}`).join(', ')}`);
  }
  if (e.path.length) lines.push('path:', ...edges(e.path));
  if (e.traversePath) lines.push(`manage path to the owner (lets ${e.user} reach what it owns):`, ...edges(e.traversePath));
  if (ended) {
    lines.push(`path until ${ended.atExact}${ended.via === 'owner' ? ' (through its owner)' : ''}:`, ...edges(ended.path));
    if (ended.traversePath) lines.push(`manage path to the owner until then (it let ${e.user} reach what it owns):`, ...edges(ended.traversePath));
  }
  // The permission rows check() reads, where an expiry bounds them.
  for (const row of e.rows.filter((r) => r.validUntilExact !== null)) {
    const what = `${levelName(row.level)}${row.traverseOwned ? ' and what it owns' : ''}`;
    const when = row.expired ? `expired at ${row.validUntilExact!}, awaiting recomputation` : `valid until ${row.validUntilExact!}`;
    lines.push(`row ${e.user} -> ${row.target}: ${what}, ${when}`);
  }
  if (e.pendingChanges > 0) {
    lines.push(
      `note: ${e.pendingChanges} change(s) pending: the permission table may not reflect this yet ` +
        '(explain reads the current grants and owners; check and list answer from the table until a worker applies them)',
    );
  }
  return lines;
}

/** One line per change, e.g. `+ role viewer = 1 (read)`, `~ operation doc.delete: 2 -> 3`, `- role admin (was 3)`. */
export function describeChange(change: CatalogChange): string {
  const named = (level: Level) => `${level} (${levelName(level)})`;
  if (change.change === 'add') return `+ ${change.kind} ${change.name} = ${named(change.to!)}`;
  if (change.change === 'remove') return `- ${change.kind} ${change.name} (was ${named(change.from!)})`;
  return `~ ${change.kind} ${change.name}: ${named(change.from!)} -> ${named(change.to!)}`;
}

/**
 * One line describing an audit entry (tab-separated). Its moments are
 * printed as the log stores them, to the microsecond (the …Exact fields),
 * and compared so: an expiry moved by less than a millisecond is a change.
 */
export function describeEntry(e: AuditEntry): string {
  const level = (n: number | null) => (n === null ? '-' : String(n));
  const expiry = (at: string | null) => at ?? 'never';
  const until = (at: string | null) => (at === null ? '' : ` until ${at}`);
  const what = (() => {
    switch (e.action) {
      case 'grant': return `${e.tailId} -> ${e.headId} level ${level(e.newLevel)}${until(e.newExpiresAtExact)} (source ${printable(e.source ?? '')})`;
      case 'revoke': return `${e.tailId} -> ${e.headId} level ${level(e.oldLevel)}${until(e.oldExpiresAtExact)} (source ${printable(e.source ?? '')})`;
      case 'change_level': {
        const expiryChange = e.oldExpiresAtExact === e.newExpiresAtExact ? until(e.newExpiresAtExact) : ` expires ${expiry(e.oldExpiresAtExact)} => ${expiry(e.newExpiresAtExact)}`;
        return `${e.tailId} -> ${e.headId} level ${level(e.oldLevel)} => ${level(e.newLevel)}${expiryChange} (source ${printable(e.source ?? '')})`;
      }
      case 'change_expiry': return `${e.tailId} -> ${e.headId} level ${level(e.newLevel)} expires ${expiry(e.oldExpiresAtExact)} => ${expiry(e.newExpiresAtExact)} (source ${printable(e.source ?? '')})`;
      case 'set_owner': return `${e.nodeKind} ${e.headId} owner ${e.oldOwner ?? 'none'} => ${e.newOwner ?? 'none'}`;
      case 'create_node': return `${e.nodeKind} ${e.headId}${e.newOwner ? ` owner ${e.newOwner}` : ''}${e.newTrashAtExact === null ? '' : ` trash_at ${e.newTrashAtExact}`}${e.details?.superuser === true ? ' superuser' : ''}`;
      case 'delete_node': return `${e.nodeKind} ${e.headId}${e.oldOwner ? ` (owner was ${e.oldOwner})` : ''}`;
      case 'set_superuser': return `${e.nodeKind} ${e.headId} superuser ${e.details?.superuser === true ? 'on' : 'off'}`;
      case 'set_trash': return `${e.nodeKind} ${e.headId} trash_at ${e.oldTrashAtExact ?? 'none'} => ${e.newTrashAtExact ?? 'none'}`;
      case 'import': return `run ${printable(e.source ?? '')}: ${JSON.stringify(e.details)}`;
      case 'truncate': return `table ${String(e.details?.table)}`;
      case 'truncate_audit': return 'audit log truncated';
      case 'prune_audit': return `entries before ${String(e.details?.before)} pruned (${String(e.details?.entries)})`;
      case 'catalog': return `${String(e.details?.kind)} ${String(e.details?.name)} level ${level(e.oldLevel)} => ${level(e.newLevel)}`;
    }
  })();
  // the login too when the application declared someone else: an actor is a claim, the login is not
  const actor = e.dbRole === null || e.actor === e.dbRole ? printable(e.actor) : `${printable(e.actor)} (login ${printable(e.dbRole)})`;
  return `${e.id}\t${e.atExact}\t${actor}\t${e.action}\t${what}`;
}

/**
 * Where the active worker connects from and since when. PostgreSQL shows
 * another role's session's address and start only to superusers and
 * members of pg_read_all_stats (status() runs as the schema's owner): both
 * null then, which is not a local socket.
 */
export function workerConnection(worker: { clientAddr: string | null; since: string | null }): string {
  if (worker.since === null) return 'its address and start hidden from the schema\'s owner (grant it pg_read_all_stats to see them)';
  return `from ${worker.clientAddr ?? 'local socket'}, since ${worker.since}`;
}
