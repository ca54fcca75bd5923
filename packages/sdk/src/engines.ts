import { EngineRegistry } from '@strata/core';
import { SqliteEngine } from '@strata/engine-sqlite';
import { PostgresEngine, PostgresPhysicalEngine } from '@strata/engine-postgres';
import { MysqlEngine } from '@strata/engine-mysql';

/** Every engine this build of Strata ships, in one visible place. */
export function createDefaultEngines(): EngineRegistry {
  return new EngineRegistry().register(new PostgresEngine()).register(new PostgresPhysicalEngine()).register(new MysqlEngine()).register(new SqliteEngine());
}
