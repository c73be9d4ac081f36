// permgraph's public TypeScript API.
export { Permgraph, type ConnectOptions, type FreshCheckOptions } from './client.ts';
export type { Level, LevelInput, NodeKind } from './types.ts';
export type { ApplyOptions, BatchResult } from './engine/apply.ts';
export type { ChunkOptions, ChunkResult } from './engine/long-job.ts';
export type { CheckOptions } from './engine/check.ts';
export { parseLevel, LEVEL_NAMES } from './levels.ts';
export { FreshnessTimeoutError, type FreshnessToken } from './engine/freshness.ts';
export type { Difference, VerifyResult } from './engine/verify.ts';
export {
  type PermissionChange, type Registration, type ReadOptions, type ChangeBatch, type ChangesOptions, type ConsumerStatus,
} from './engine/changes.ts';
export { loadMigrations, loadFunctionFiles, type MigrateOptions, type MigrateResult } from './migrations/migrate.ts';
export { assertServerVersion, MIN_SERVER_VERSION_NUM } from './db/server-version.ts';
export { Worker, type WorkerOptions, type WorkerEvents } from './worker/worker.ts';
export { createWorkerMetrics, serveMetrics } from './worker/metrics.ts';
export { startEmbedded, defaultDataDir, type EmbeddedServer } from './db/embedded.ts';
export { openPool, sql } from './db/pool.ts';
export { createLogger, silentLogger, type Logger } from './logger.ts';
export * from './errors.ts';
export * from './app/catalog.ts';
export * from './app/access.ts';
export * from './app/rls.ts';
export { type GrantResult, type RevokeResult, type GrantOptions, type WriteGrantOptions } from './app/grants.ts';
export { parseExpiresAt, parseExactMoment, parseDuration, type ExpiryInput } from './expiry.ts';
// Kept for compatibility: the CLI's wording of a catalog change.
export { describeChange } from './cli/format.ts';
export { type Page, type TargetItem, type UserItem, type ListTargetsOptions, type ListUsersOptions } from './app/listing.ts';
export { type Explanation, type PathEdge, type ExplainReason, type PermissionRowUsed, type AccessEnded } from './app/explain.ts';
export { type DesiredGrant, type SyncResult as SyncGrantsResult } from './app/sync-grants.ts';
export { ImportRejectedError, type ImportOptions, type ImportSummary, type ImportProblem } from './app/import/index.ts';
export { setActor, type AuditEntry, type AuditFilter, type AuditPage, type PruneAuditOptions, type PruneAuditResult } from './app/audit.ts';
export { type DoctorCheck } from './app/doctor.ts';

// The functions that take a pool, each telling PostgreSQL's refusal of it
// with the login it needs (src/rights.ts); those of `export *` above are
// shadowed by these.
import { needing, generatorWithRightsOf, withRightsOf } from './rights.ts';
export { RIGHTS_NEEDED, type RightNeeded, type RightsHolder } from './rights.ts';
import * as apply from './engine/apply.ts';
import * as longJob from './engine/long-job.ts';
import * as checking from './engine/check.ts';
import * as freshness from './engine/freshness.ts';
import * as verifying from './engine/verify.ts';
import * as stream from './engine/changes.ts';
import * as migrations from './migrations/migrate.ts';
import * as catalog from './app/catalog.ts';
import * as access from './app/access.ts';
import * as rls from './app/rls.ts';
import * as grants from './app/grants.ts';
import * as listing from './app/listing.ts';
import * as explaining from './app/explain.ts';
import * as syncing from './app/sync-grants.ts';
import * as importing from './app/import/index.ts';
import * as audit from './app/audit.ts';
import * as doctor from './app/doctor.ts';
import type { Queryable } from './db/pool.ts';

export const applyChanges = needing('applyChanges', apply.applyChanges);
export const refresh = needing('refresh', apply.refresh);
export const applyJobChunk = needing('applyJobChunk', longJob.applyJobChunk);
export const verify = needing('verify', verifying.verify);
export const check = needing('check', checking.check);
export const currentToken = needing('currentToken', freshness.currentToken);
export const isApplied = needing('isApplied', freshness.isApplied);
export const waitFor = needing('waitFor', freshness.waitFor);
export const readChanges = needing('readChanges', stream.readChanges);
export const ackChanges = needing('ackChanges', stream.ackChanges);
export const dropConsumer = needing('dropConsumer', stream.dropConsumer);
export const consumerStatus = needing('consumerStatus', stream.consumerStatus);
export const migrate = needing('migrate', migrations.migrate);
export const schemaState = needing('schemaState', migrations.schemaState);
export const syncRoles = needing('syncRoles', catalog.syncRoles);
export const parseLevelOrRole = needing('parseLevelOrRole', access.parseLevelOrRole);
export const checkAccess = needing('checkAccess', access.checkAccess);
export const checkMany = needing('checkMany', access.checkMany);
export const requireUserAndTarget = needing('requireUserAndTarget', access.requireUserAndTarget);
export const checkOperation = needing('checkOperation', access.checkOperation);
export const canAccessRow = needing('canAccessRow', access.canAccessRow);
export const setSuperuser = needing('setSuperuser', rls.setSuperuser);
export const enableRowLevelSecurity = needing('enableRowLevelSecurity', rls.enableRowLevelSecurity);
export const disableRowLevelSecurity = needing('disableRowLevelSecurity', rls.disableRowLevelSecurity);
export const writeGrant = needing('writeGrant', grants.writeGrant);
export const revokeGrant = needing('revokeGrant', grants.revokeGrant);
export const listTargets = needing('listTargets', listing.listTargets);
export const listUsers = needing('listUsers', listing.listUsers);
export const explain = needing('explain', explaining.explain);
export const syncGrants = needing('syncGrants', syncing.syncGrants);
export const importGraph = needing('importGraph', importing.importGraph);
export const listAudit = needing('listAudit', audit.listAudit);
export const pruneAudit = needing('pruneAudit', audit.pruneAudit);
export const runDoctor = needing('runDoctor', doctor.runDoctor);

/** registerConsumer (src/engine/changes.ts), its refusals telling the login it needs. */
export function registerConsumer<T = undefined>(
  db: Queryable,
  name: string,
  readSnapshot?: (tx: Queryable, registration: { seq: number; created: boolean }) => Promise<T>,
): Promise<stream.Registration<T>> {
  return withRightsOf('registerConsumer', () => stream.registerConsumer(db, name, readSnapshot));
}

/** changes (src/engine/changes.ts), its refusals telling the login it needs. */
export function changes(db: Queryable, name: string, options?: stream.ChangesOptions): AsyncGenerator<stream.ChangeBatch, void, undefined> {
  return generatorWithRightsOf('changes', stream.changes(db, name, options));
}
