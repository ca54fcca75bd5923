import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { formatTablespaceMap, isStrataError, parseTablespaceMap, placeTablespaces, tarMember } from '@strata/sdk';

/**
 * Where a physical restore puts a cluster's tablespaces, decided from base.tar's tablespace_map
 * before anything is written: a folder that holds something is refused (on the machine the backup
 * was taken on, the recorded folder is the live cluster's own), and so is a plan that would put a
 * tablespace inside the data directory, however the path is spelled. The real restores are in
 * test/pg-physical-layout.test.ts; these are the rules, one by one.
 */
describe('physical restores: where tablespaces go', () => {
  let dir = '';
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'strata-tablespaces-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const recorded = (location: string): Map<string, string> => new Map([['16384', location]]);
  const refused = (code: string, pattern: RegExp) => (err: unknown) => isStrataError(err, code as never) && pattern.test((err as Error).message);

  it('goes back where it was when that folder is empty or absent, and is refused where it holds something', () => {
    const live = path.join(dir, 'live');
    assert.deepEqual(placeTablespaces(recorded(live), undefined, path.join(dir, 'data'), false), new Map([['16384', { to: live, replace: false }]]));
    mkdirSync(path.join(live, 'PG_15_202209061'), { recursive: true });
    assert.throws(() => placeTablespaces(recorded(live), undefined, path.join(dir, 'data'), false), refused('TARGET_EXISTS', /it is the cluster's own tablespace.*--tablespace-map .*live=NEW_FOLDER/));
    const moved = path.join(dir, 'moved');
    assert.deepEqual(placeTablespaces(recorded(live), { map: { [`${live}/`]: moved } }, path.join(dir, 'data'), false).get('16384'), { to: moved, replace: false }, 'OLD is matched with or without a trailing slash');
    assert.deepEqual(placeTablespaces(recorded(live), { under: path.join(dir, 'scratch') }, path.join(dir, 'data'), false).get('16384'), { to: path.join(dir, 'scratch', '16384'), replace: false });
  });

  it('refuses a map naming a folder no tablespace was in, a folder inside the data directory (also through a link), and two tablespaces in one folder', () => {
    const data = path.join(dir, 'data');
    assert.throws(() => placeTablespaces(recorded('/srv/a'), { map: { '/srv/typo': '/srv/b' } }, data, false), refused('USAGE', /names \/srv\/typo, where this backup had no tablespace \(its tablespaces were at \/srv\/a\)/));
    assert.throws(() => placeTablespaces(new Map(), { map: { '/srv/a': '/srv/b' } }, data, false), refused('USAGE', /had no tablespace \(no tablespaces\)/));
    assert.throws(() => placeTablespaces(recorded('/srv/a'), { map: { '/srv/a': path.join(data, 'ts') } }, data, false), refused('USAGE', /inside the data directory/));
    mkdirSync(data);
    symlinkSync(dir, path.join(dir, 'link'));
    assert.throws(() => placeTablespaces(recorded('/srv/a'), { map: { '/srv/a': path.join(dir, 'link', 'data', 'ts') } }, data, false), refused('USAGE', /inside the data directory/));
    const two = new Map([['1', '/srv/a'], ['2', '/srv/b']]);
    assert.throws(() => placeTablespaces(two, { map: { '/srv/a': path.join(dir, 'x'), '/srv/b': path.join(dir, 'x', 'y') } }, data, false), refused('USAGE', /both be restored into/));
    assert.throws(() => placeTablespaces(recorded('/srv/a'), { map: { '/srv/a': path.join(dir, 'new\nline') } }, data, false), refused('USAGE', /backslash or a line end/));
  });

  it('with --force replaces the folders of the data directory it replaces, never the one a tablespace was in when backed up', () => {
    const live = path.join(dir, 'live');
    const earlier = path.join(dir, 'earlier');
    for (const folder of [live, earlier]) mkdirSync(path.join(folder, 'PG_15_202209061'), { recursive: true });
    // A copy of the live data directory: its link points at the live tablespace.
    const copy = path.join(dir, 'copy');
    mkdirSync(path.join(copy, 'pg_tblspc'), { recursive: true });
    symlinkSync(live, path.join(copy, 'pg_tblspc', '16384'));
    assert.throws(() => placeTablespaces(recorded(live), undefined, copy, true), refused('TARGET_EXISTS', /cluster's own tablespace/));
    // An earlier restore, started (links) or not (tablespace_map), into another folder.
    // A folder the replaced data directory does not use is not replaced either.
    assert.throws(() => placeTablespaces(recorded(live), { map: { [live]: earlier } }, copy, true), refused('TARGET_EXISTS', /earlier exists and is not empty; nothing was written there/));
    const restored = path.join(dir, 'restored');
    mkdirSync(restored);
    writeFileSync(path.join(restored, 'tablespace_map'), formatTablespaceMap(new Map([['16384', earlier]])));
    assert.deepEqual(placeTablespaces(recorded(live), { map: { [live]: earlier } }, restored, true).get('16384'), { to: earlier, replace: true });
    rmSync(path.join(restored, 'tablespace_map'));
    mkdirSync(path.join(restored, 'pg_tblspc'));
    symlinkSync(earlier, path.join(restored, 'pg_tblspc', '16384'));
    assert.deepEqual(placeTablespaces(recorded(live), { map: { [live]: earlier } }, restored, true).get('16384'), { to: earlier, replace: true });
  });

  it('reads tablespace_map as PostgreSQL does, and writes what it reads back', () => {
    assert.deepEqual(parseTablespaceMap('16384 /srv/pg/fast\n16385 /srv/pg/with space\n'), new Map([['16384', '/srv/pg/fast'], ['16385', '/srv/pg/with space']]));
    const odd = new Map([['1', '/srv/back\\slash'], ['2', '/srv/new\nline']]);
    assert.deepEqual(parseTablespaceMap(formatTablespaceMap(odd)), odd);
    assert.throws(() => parseTablespaceMap('not a line\n'), refused('ARTIFACT_CORRUPT', /would not read/));
  });

  it('adds a member GNU tar reads back byte for byte', () => {
    const body = Buffer.from('{"PostgreSQL-Backup-Manifest-Version": 1}\n'.repeat(40));
    const file = path.join(dir, 'one.tar');
    writeFileSync(file, Buffer.concat([...tarMember('backup_manifest', body), Buffer.alloc(1024)]));
    const listed = spawnSync('tar', ['-tvf', file], { encoding: 'utf8' });
    assert.equal(listed.status, 0, listed.stderr);
    assert.match(listed.stdout, /^-rw------- .* 1680 .* backup_manifest$/m);
    const out = spawnSync('tar', ['-xOf', file, 'backup_manifest']);
    assert.equal(out.status, 0, out.stderr.toString());
    assert.deepEqual(out.stdout, body);
  });
});
