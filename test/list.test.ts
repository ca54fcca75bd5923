import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import * as path from 'node:path';
import { initRepository, openRepository } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';
import { CLI, FIXTURE_DB, copyInto, json, strata, useSuiteDir, useTempDir } from './helpers/env.js';

interface ListJson {
  backups: BackupRecord[];
  newestGood: Record<string, string | null>;
  omitted: Record<string, number>;
}

/**
 * `strata list` on a real terminal: `script` gives the CLI a pseudo-terminal of the width asked,
 * as a person's terminal would. Returns its output with the terminal's CRLF turned back into LF.
 */
function onTerminal(args: string[], columns: number): string {
  const command = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const result = spawnSync('script', ['-qec', `stty cols ${columns} rows 60; exec ${command}`, '/dev/null'], {
    encoding: 'utf8',
    input: '',
    env: { ...process.env, STRATA_PASSPHRASE: undefined, CI: undefined } as NodeJS.ProcessEnv,
  });
  assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
  return result.stdout.replace(/\r\n/g, '\n');
}

/** The long options a command's --help names. */
function helpFlags(command: string): Set<string> {
  return new Set([...strata([command, '--help']).stdout.matchAll(/--[a-z][a-z-]*/g)].map((m) => m[0]));
}

describe('strata list: filters, limits and a listing that fits a terminal', function () {
  const fixture = useSuiteDir();
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');
  const list = (...args: string[]): ListJson => json<ListJson>(strata(['list', '--repo', repo(), '--json', ...args]));

  // Two databases: app with a full and 13 hourly incrementals on 2 November (each on the one
  // before), shop with a full tagged nightly, a labelled full and a schema-only backup on 3 November.
  before(async function () {
    const where = path.join(fixture.path, 'repo');
    await initRepository(where, { encryption: 'none' });
    const sdk = await openRepository(where, { tempDir: path.join(fixture.path, 'tmp') });
    const app = path.join(fixture.path, 'app.db');
    const shop = path.join(fixture.path, 'shop.db');
    copyFileSync(FIXTURE_DB, app);
    copyFileSync(FIXTURE_DB, shop);
    try {
      for (let hour = 0; hour < 14; hour++) {
        await sdk.backup(app, { database: 'app', type: hour === 0 ? 'full' : 'incremental', time: new Date(Date.UTC(2026, 10, 2, hour)) });
      }
      await sdk.backup(shop, { database: 'shop', type: 'full', tags: ['nightly'], time: new Date('2026-11-03T01:00:00Z') });
      await sdk.backup(shop, { database: 'shop', type: 'full', label: 'pre-update', time: new Date('2026-11-03T02:00:00Z') });
      await sdk.backup(shop, { database: 'shop', type: 'schema-only', time: new Date('2026-11-03T03:00:00Z') });
    } finally {
      await sdk.close();
    }
  });
  beforeEach(() => copyInto(path.join(fixture.path, 'repo'), repo()));

  it('prints every restore point, whole, when piped and with --json', () => {
    const piped = strata(['list', '--repo', repo()]);
    assert.equal(piped.status, 0, piped.stderr);
    assert.equal(piped.stdout.split('\n').filter((l) => /^\S*\s*(└ )?(app|shop)_/.test(l.trim())).length, 17);
    assert.match(piped.stdout, /^17 backup\(s\)$/m);
    const all = list();
    assert.equal(all.backups.length, 17);
    assert.deepEqual(all.omitted, {});
    assert.deepEqual(Object.keys(all.newestGood).sort(), ['app', 'shop']);
  });

  it('filters by database (named first or with --db), time, type, tag and label', () => {
    assert.ok(list('app').backups.every((b) => b.database === 'app'));
    assert.deepEqual(list('--db', 'shop').backups.map((b) => b.type), ['full', 'full', 'schema-only']);
    assert.deepEqual(list('--type', 'full').backups.map((b) => b.database), ['app', 'shop', 'shop']);
    assert.deepEqual(list('--type', 'schema').backups.map((b) => b.type), ['schema-only']);
    assert.equal(list('--type', 'full,schema').backups.length, 4);
    assert.deepEqual(list('--tag', 'nightly').backups.map((b) => b.createdAt), ['2026-11-03T01:00:00.000Z']);
    assert.deepEqual(list('--label', 'pre-update').backups.map((b) => b.createdAt), ['2026-11-03T02:00:00.000Z']);
    assert.equal(list('--since', '2026-11-02T12:00:00Z').backups.length, 5, 'hours 12 and 13 of app, and shop');
    assert.equal(list('--since', '2026-11-03').backups.length, 3);
    // Durations count back from now: every backup here is older than a day.
    assert.equal(list('--since', '1d').backups.length, 0);
    assert.equal(list('--since', '100y').backups.length, 17);
    // A filter does not change which restore point is the newest good one of its database.
    assert.equal(list('--type', 'schema').newestGood['shop'], list().newestGood['shop']);
    assert.match(strata(['list', '--repo', repo(), '--type', 'differential']).stdout, /no backups match \(17 without the filters\)/);
    assert.match(strata(['list', 'apq', '--repo', repo()]).stdout, /no backups of apq \(this repository has backups of app, shop\)/);
  });

  it('--limit keeps the newest N of each database, also in --json, and says how many it left out', () => {
    const limited = list('--limit', '3');
    assert.deepEqual(
      limited.backups.map((b) => `${b.database} ${b.createdAt.slice(11, 13)}`),
      ['app 11', 'app 12', 'app 13', 'shop 01', 'shop 02', 'shop 03'],
    );
    assert.deepEqual(limited.omitted, { app: 11 });
    const human = strata(['list', '--repo', repo(), '--limit', '2']);
    assert.match(human.stdout, /^4 of 17 backup\(s\): the newest 2 of each database, as --limit asked \(12 older of app, 1 older of shop not shown\)$/m);
  });

  it('refuses bad filters with exit status 2 and a message naming the flag', () => {
    for (const [args, message] of [
      [['--since', 'yesterday'], /--since "yesterday" is neither an ISO date\/time/],
      [['--since', '3x'], /--since: "3x" is not a duration/],
      [['--type', 'partial'], /--type must be one of full, incremental, differential, schema/],
      [['--limit', '0'], /--limit expects a whole number of at least 1/],
      [['app', '--db', 'shop'], /two databases named/],
      [['--by-tier', '--limit', '2'], /--by-tier .* does not combine with --limit/],
    ] as const) {
      const result = strata(['list', '--repo', repo(), ...args]);
      assert.equal(result.status, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message);
    }
  });

  it('on a terminal: the newest 10 of each database, lines within the width, and hints that name real flags', () => {
    const text = onTerminal(['list', '--repo', repo()], 100);
    const rows = text.split('\n').filter((l) => /^(└ )?(app|shop)_/.test(l));
    assert.equal(rows.length, 13, text);
    for (const line of text.split('\n').filter((l) => l.startsWith('ID') || /^(└ )?(app|shop)_/.test(l))) {
      assert.ok(line.length <= 100, `${line.length} characters: ${line}`);
    }
    // Identifiers are what a person copies: never cut.
    assert.ok(rows.every((r) => /^(└ )?(app|shop)_(full|incremental|schema-only)_\d{8}_\d{6}_[0-9a-f]{4}\b/.test(r)), text);
    // A chain of incrementals, each on the one before, stays at one indentation.
    assert.ok(rows.every((r) => !r.startsWith(' ')), text);
    assert.match(text, /^13 of 17 backup\(s\): the newest 10 of each database \(4 older of app not shown; --all lists every one/m);
    assert.match(text, /to fit the terminal, left out [A-Z, ]+.*: --wide shows every column whole/);
    const known = helpFlags('list');
    for (const flag of text.match(/--[a-z][a-z-]*/g) ?? []) assert.ok(known.has(flag), `the hint names ${flag}, which list --help does not know`);

    const everything = onTerminal(['list', '--repo', repo(), '--all'], 100);
    assert.equal(everything.split('\n').filter((l) => /^(└ )?(app|shop)_/.test(l)).length, 17);
    const wide = onTerminal(['list', '--repo', repo(), '--wide'], 100);
    assert.match(wide, /^ID\s+DATABASE\s+ENGINE\s+TYPE\s+CREATED\s+AGE\s+DB SIZE\s+STORED\s+CHAIN\s+VERIFIED\s+LABEL$/m);
    assert.equal(wide.split('\n').filter((l) => /^(└ )?(app|shop)_/.test(l)).length, 13);
    // --json on a terminal is still the whole document.
    assert.equal((JSON.parse(onTerminal(['list', '--repo', repo(), '--json'], 100)) as ListJson).backups.length, 17);
  });
});
