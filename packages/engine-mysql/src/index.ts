export { MysqlEngine } from './mysql-engine.js';
export { parseTarget } from './mysql-connection.js';
export type { MysqlTarget } from './mysql-connection.js';
