// permgraph's public TypeScript API.
export { Permgraph, type ConnectOptions, type NodeKind } from './client.ts';
export { applyChanges, refresh, type ApplyOptions, type BatchResult } from './engine/apply.ts';
export { check, parseLevel, LEVEL_NAMES, type Level } from './engine/check.ts';
export { currentToken, isApplied, waitFor, FreshnessTimeoutError, type FreshnessToken } from './engine/freshness.ts';
export { verify, type Difference, type VerifyResult } from './engine/verify.ts';
export { migrate, schemaState, loadMigrations } from './migrations/migrate.ts';
export { Worker, type WorkerOptions, type WorkerEvents } from './worker/worker.ts';
export { createWorkerMetrics, serveMetrics } from './worker/metrics.ts';
export { startEmbedded, defaultDataDir, type EmbeddedServer } from './db/embedded.ts';
export { openPool, sql } from './db/pool.ts';
export { createLogger, silentLogger, type Logger } from './logger.ts';
export * from './errors.ts';
export * from './app/roles.ts';
