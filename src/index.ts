// permgraph's public TypeScript API.
export { Permgraph, type ConnectOptions, type FreshCheckOptions } from './client.ts';
export type { Level, LevelInput, NodeKind } from './types.ts';
export { applyChanges, refresh, type ApplyOptions, type BatchResult } from './engine/apply.ts';
export { applyJobChunk, type ChunkOptions, type ChunkResult } from './engine/long-job.ts';
export { check, type CheckOptions } from './engine/check.ts';
export { parseLevel, LEVEL_NAMES } from './levels.ts';
export { currentToken, isApplied, waitFor, FreshnessTimeoutError, type FreshnessToken } from './engine/freshness.ts';
export { verify, type Difference, type VerifyResult } from './engine/verify.ts';
export {
  registerConsumer, readChanges, ackChanges, dropConsumer, changes, consumerStatus,
  type PermissionChange, type Registration, type ReadOptions, type ChangeBatch, type ChangesOptions, type ConsumerStatus,
} from './engine/changes.ts';
export { migrate, schemaState, loadMigrations, loadFunctionFiles, type MigrateResult } from './migrations/migrate.ts';
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
export { writeGrant, revokeGrant, type GrantResult, type RevokeResult, type GrantOptions, type WriteGrantOptions } from './app/grants.ts';
export { parseExpiresAt, parseExactMoment, parseDuration, type ExpiryInput } from './expiry.ts';
// Kept for compatibility: the CLI's wording of a catalog change.
export { describeChange } from './cli/format.ts';
export { listTargets, listUsers, type Page, type TargetItem, type UserItem, type ListTargetsOptions, type ListUsersOptions } from './app/listing.ts';
export { explain, type Explanation, type PathEdge, type ExplainReason, type PermissionRowUsed, type AccessEnded } from './app/explain.ts';
export { syncGrants, type DesiredGrant, type SyncResult as SyncGrantsResult } from './app/sync-grants.ts';
export { importGraph, ImportRejectedError, type ImportOptions, type ImportSummary, type ImportProblem } from './app/import/index.ts';
export { listAudit, pruneAudit, setActor, type AuditEntry, type AuditFilter, type AuditPage, type PruneAuditOptions, type PruneAuditResult } from './app/audit.ts';
export { runDoctor, type DoctorCheck } from './app/doctor.ts';
