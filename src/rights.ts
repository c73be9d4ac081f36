// Which login each public operation needs (docs/security.md, "The three
// roles"): the Permgraph methods and the exported functions that take a
// pool, by name. The one table: the library tells a refused call with it
// (withRightsOf), and the command line names its commands' needs from it.
import { withRightsNeeded } from './errors.ts';

/** Who may make a call: a login granted one of permgraph's roles, or the schema's owner. */
export type RightsHolder = 'permgraph_reader' | 'permgraph_writer' | 'permgraph_worker' | 'owner';

/** What a call needs: its holder, and what else to know (a dry run's lesser need, a table's owner). */
export interface RightNeeded {
  holder: RightsHolder;
  note?: string;
}

const reader: RightNeeded = { holder: 'permgraph_reader' };
const writer: RightNeeded = { holder: 'permgraph_writer' };
const worker: RightNeeded = { holder: 'permgraph_worker' };
const owner: RightNeeded = { holder: 'owner' };
/** (owner only, unless it only counts: prune_audit_log and the catalog's writes are the owner's) */
const ownerUnlessDryRun: RightNeeded = { holder: 'owner', note: 'a dry run: any permgraph role' };
/** (enable_rls and disable_rls run with the caller's rights: policies on a table are its owner's to make) */
const tableOwner: RightNeeded = { holder: 'permgraph_reader', note: "and the table's owner" };

/** Each public operation's need. Keys are the names the caller calls (a method of Permgraph, or an exported function). */
export const RIGHTS_NEEDED = {
  // the engine
  applyChanges: worker,
  applyJobChunk: worker,
  refresh: worker,
  verify: worker,
  // writes of the graph
  addNode: writer,
  setOwner: writer,
  setTrash: writer,
  removeNode: writer,
  grant: writer,
  writeGrant: writer,
  revoke: writer,
  revokeGrant: writer,
  syncGrants: writer,
  setSuperuser: writer,
  // the owner's jobs
  migrate: owner,
  importGraph: owner,
  syncRoles: ownerUnlessDryRun,
  pruneAudit: ownerUnlessDryRun,
  // row-level security on the application's tables
  enableRowLevelSecurity: tableOwner,
  disableRowLevelSecurity: tableOwner,
  // reads, and the change stream (its consumers: every permgraph role)
  check: reader,
  checkMany: reader,
  checkAccess: reader,
  checkOperation: reader,
  can: reader,
  canAccessRow: reader,
  levelOf: reader,
  parseLevelOrRole: reader,
  requireUserAndTarget: reader,
  listTargets: reader,
  listUsers: reader,
  explain: reader,
  audit: reader,
  listAudit: reader,
  doctor: reader,
  runDoctor: reader,
  currentToken: reader,
  isApplied: reader,
  waitFor: reader,
  schemaState: reader,
  registerConsumer: reader,
  readChanges: reader,
  ackChanges: reader,
  changes: reader,
  dropConsumer: reader,
  consumerStatus: reader,
} as const satisfies Record<string, RightNeeded>;

/** A public operation, by name. */
export type Operation = keyof typeof RIGHTS_NEEDED;

/** Who may make a call, in words: "a login granted permgraph_worker", "the schema's owner (a dry run: any permgraph role)". */
export function describeRightNeeded(need: RightNeeded, note = need.note): string {
  const holder = need.holder === 'owner' ? "the schema's owner" : `a login granted ${need.holder}`;
  return note === undefined ? holder : `${holder} (${note})`;
}

/** PostgreSQL's own refusal of the operation, said as the call's: "<operation>() needs <who> (docs/security.md)" (withRightsNeeded). */
export function refusedOperation(error: unknown, operation: Operation): unknown {
  return withRightsNeeded(error, `${operation}()`, describeRightNeeded(RIGHTS_NEEDED[operation]));
}

/** Runs one call of `operation`, telling PostgreSQL's refusals of it with what it needs. */
export async function withRightsOf<T>(operation: Operation, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw refusedOperation(error, operation);
  }
}

/** `fn` (an exported function of the API) telling its refusals as `operation`'s. */
export function needing<A extends unknown[], R>(operation: Operation, fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return (...args) => withRightsOf(operation, () => fn(...args));
}

/** An async generator of `operation` (the change stream's), telling its refusals as the operation's. */
export async function* generatorWithRightsOf<T>(operation: Operation, generator: AsyncGenerator<T, void, undefined>): AsyncGenerator<T, void, undefined> {
  try {
    yield* generator;
  } catch (error) {
    throw refusedOperation(error, operation);
  }
}
