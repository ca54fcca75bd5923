export { SqliteEngine, SQLITE_STREAM, filePath } from './sqlite-engine.js';
export type { SqliteEngineOptions } from './sqlite-engine.js';
