export { PostgresEngine } from './postgres-engine.js';
export { parseTarget } from './pg-connection.js';
export type { PgTarget } from './pg-connection.js';
export { BASE_STREAM, PHYSICAL_SCHEMES, PostgresPhysicalEngine, clusterUrl, isPostgresUrl, pgProgram, physicalLocator } from './pg-physical-engine.js';
export type { PhysicalMeta, PhysicalPosition } from './pg-physical-engine.js';
export { chooseBase, configureRecovery, describeGoal, freePort, planWal, proveRecovery, recoverySettings } from './pg-point-in-time.js';
export type { RecoveryGoal, RecoveryReport, TargetAction, WalPlan } from './pg-point-in-time.js';
export { parseLsn, parseWalName, segmentOf, walFileName, walRun } from './pg-wal.js';
export type { WalRun } from './pg-wal.js';
