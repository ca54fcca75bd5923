export { PostgresEngine } from './postgres-engine.js';
export { parseTarget } from './pg-connection.js';
export type { PgTarget } from './pg-connection.js';
