import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import type pg from 'pg';
import { Passphrase, archiveFileProblem, openRepository, readWalLongHeader, walSegmentProblem } from '@strata/sdk';
import { TEST_PASSPHRASE } from './helpers/env.js';
import { BINDIR, client, isRoot, makeCluster, requireServerPrograms, runSync, switchAndArchive } from './helpers/pg-cluster.js';
import type { TestCluster } from './helpers/pg-cluster.js';

/**
 * wal-push stores a file under a WAL segment's name only when it is that segment, of the cluster
 * the archive holds: a wrong file accepted once (a truncated copy, random bytes, a segment under
 * another segment's name, another cluster's segment) would make the server's real segment of
 * that name a conflict on every retry, archiving stuck for good. Each refusal is a failed
 * archive_command that stores nothing, and the real segment is archived afterwards. verify reads
 * the same header facts of each segment it reads back.
 */

const DB = 'c';
const MIB = 1024 * 1024;

/** A 16 MiB segment's first page long header, as a server of the given byte order writes it. */
function segment(options: { timeline: number; pageAddress: bigint; sysid?: bigint; segmentBytes?: number; length?: number; little?: boolean }): Uint8Array {
  const segmentBytes = options.segmentBytes ?? 16 * MIB;
  const bytes = new Uint8Array(options.length ?? segmentBytes);
  const view = new DataView(bytes.buffer);
  const little = options.little ?? true;
  view.setUint16(0, 0xd110, little);
  view.setUint16(2, 0x0002, little);
  view.setUint32(4, options.timeline, little);
  view.setBigUint64(8, options.pageAddress, little);
  view.setBigUint64(24, options.sysid ?? 7715661712446760339n, little);
  view.setUint32(32, segmentBytes, little);
  view.setUint32(36, 8192, little);
  return bytes;
}

describe('WAL segment header checks (no server)', function () {
  it('takes a segment of its name, and says what is wrong with each other kind of file', function () {
    const seg10 = 0x10n * BigInt(16 * MIB);
    assert.equal(walSegmentProblem('000000010000000000000010', segment({ timeline: 1, pageAddress: seg10 })), undefined);
    // The first segment of timeline 2 starts with timeline 1's pages; .partial is the old timeline's last segment at a promotion.
    assert.equal(walSegmentProblem('000000020000000000000010', segment({ timeline: 1, pageAddress: seg10 })), undefined);
    assert.equal(walSegmentProblem('000000010000000000000010.partial', segment({ timeline: 1, pageAddress: seg10 })), undefined);
    // A big-endian server's segment reads as well.
    assert.equal(walSegmentProblem('000000010000000000000010', segment({ timeline: 1, pageAddress: seg10, little: false })), undefined);
    assert.equal(readWalLongHeader(segment({ timeline: 1, pageAddress: seg10, little: false }))!.systemIdentifier, '7715661712446760339');
    // Segments of other sizes: log id 1, segment 3 of 64 MiB ones.
    assert.equal(walSegmentProblem('000000010000000100000003', segment({ timeline: 1, pageAddress: (64n + 3n) * BigInt(64 * MIB), segmentBytes: 64 * MIB })), undefined);
    // What PostgreSQL writes under other names passes; anything else does not.
    assert.equal(archiveFileProblem('00000002.history', Buffer.from('1\t0/3000060\tno recovery target specified\n')), undefined);
    assert.equal(archiveFileProblem('00000003.history', Buffer.from('1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tat restore point "x"\n')), undefined);
    assert.equal(archiveFileProblem('000000010000000000000010.00000028.backup', Buffer.from('START WAL LOCATION: 0/10000028 (file 000000010000000000000010)\n')), undefined);
    assert.match(archiveFileProblem('00000002.history', new Uint8Array(0))!, /is not a timeline history file/);
    assert.match(archiveFileProblem('backup_label', Buffer.from('START WAL LOCATION: 0/1'))!, /is not a file PostgreSQL archives/);
    // History files and backup labels are not looked at as segments.
    assert.equal(walSegmentProblem('00000002.history', new Uint8Array(30)), undefined);
    assert.equal(walSegmentProblem('000000010000000000000010.00000028.backup', new Uint8Array(30)), undefined);

    assert.match(walSegmentProblem('000000010000000000000010', segment({ timeline: 1, pageAddress: seg10, length: 1000 }))!, /is 1000 bytes, not a 16 MiB WAL segment/);
    assert.match(walSegmentProblem('000000010000000000000010', new Uint8Array(20))!, /is 20 bytes, not a WAL segment/);
    assert.match(walSegmentProblem('000000010000000000000010', randomBytes(1000))!, /is not a WAL segment/);
    assert.match(walSegmentProblem('000000010000000000000011', segment({ timeline: 1, pageAddress: seg10 }))!, /holds the WAL of 0\/10000000 \(segment 10's\), not of 0\/11000000/);
    assert.match(walSegmentProblem('000000010000000000000010', segment({ timeline: 2, pageAddress: seg10 }))!, /timeline 2, after the timeline 1 its name gives/);
    assert.match(walSegmentProblem('000000010000000000000100', segment({ timeline: 1, pageAddress: 0x100n * BigInt(16 * MIB) }))!, /not a WAL segment name for 16 MiB segments/);
  });
});

describe('wal-push refuses a file that is not the WAL segment of its name', function () {
  this.timeout(10 * 60_000);
  let cluster: TestCluster;
  let db: pg.Client | undefined;
  let work = '';
  const others: string[] = [];
  const logDir = (): string => path.join(cluster.dir, 'repo', 'backups', DB, 'log');
  const archived = (): string[] => readdirSync(logDir()).map((f) => f.slice(0, f.indexOf('_')));
  /** The segment the server writes now (a row first: right after a switch, the position is the old segment's end, which pg_walfile_name names). */
  const currentSegment = async (): Promise<string> => {
    await db!.query('INSERT INTO t VALUES (0)');
    return (await db!.query<{ w: string }>('SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS w')).rows[0]!.w;
  };
  /** A file of `bytes` named `name` in a folder of its own that the server's user can read. */
  const place = (name: string, bytes: Uint8Array): string => {
    const folder = mkdtempSync(path.join(work, 'f-'));
    chmodSync(folder, 0o755);
    const file = path.join(folder, name);
    writeFileSync(file, bytes, { mode: 0o644 });
    return file;
  };
  /** initdb of another cluster, its WAL restarted at segment `name` (pg_resetwal -l): that segment, its first page written by the other cluster. */
  const otherClusterSegment = (name: string): { bytes: Buffer; sysid: string } => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-walcheck-other-'));
    others.push(dir);
    chmodSync(dir, 0o755);
    if (isRoot) spawnSync('chown', ['postgres', dir]);
    const data = path.join(dir, 'data');
    const init = runSync(path.join(BINDIR, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync']);
    assert.equal(init.status, 0, init.out);
    const reset = runSync(path.join(BINDIR, 'pg_resetwal'), ['-l', name, '-D', data]);
    assert.equal(reset.status, 0, reset.out);
    const sysid = /Database system identifier:\s+(\d+)/.exec(runSync(path.join(BINDIR, 'pg_controldata'), [data]).out)![1]!;
    return { bytes: readFileSync(path.join(data, 'pg_wal', name)), sysid };
  };
  const push = (file: string, database = DB) => cluster.cli(['wal-push', file, '--db', database]);

  before(async function () {
    requireServerPrograms(this);
    cluster = await makeCluster('strata-walcheck-', DB);
    work = path.join(cluster.dir, 'work');
    mkdirSync(work, { mode: 0o755 });
    const started = cluster.pgCtl(['start', '-D', cluster.dataDir, '-l', path.join(cluster.dir, 'server.log'), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.out);
    db = await client(cluster.port);
    await db.query('CREATE TABLE t (n int)');
    await db.query('INSERT INTO t VALUES (1)');
    await switchAndArchive(db);
  });

  after(async function () {
    await db?.end().catch(() => undefined);
    if (!cluster) return;
    cluster.pgCtl(['stop', '-D', cluster.dataDir, '-m', 'immediate', '-w']);
    rmSync(cluster.dir, { recursive: true, force: true });
    for (const dir of others) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a truncated segment, random bytes, and a real segment under the next segment\'s name; the real ones are archived after', async function () {
    const current = await currentSegment();
    const next = `${current.slice(0, 16)}${(parseInt(current.slice(16), 16) + 1).toString(16).toUpperCase().padStart(8, '0')}`;
    // The segment being written: its first page and its size are final.
    const real = readFileSync(path.join(cluster.dataDir, 'pg_wal', current));
    assert.equal(readWalLongHeader(real)?.segmentBytes, 16 * MIB);

    const truncated = await push(place(current, real.subarray(0, 1000)));
    assert.equal(truncated.status, 1, truncated.stdout + truncated.stderr);
    assert.match(truncated.stderr, new RegExp(`${current} is 1000 bytes, not a 16 MiB WAL segment`));
    assert.match(truncated.stderr, /it was not archived/);

    const random = await push(place(current, randomBytes(1000)));
    assert.equal(random.status, 1, random.stdout + random.stderr);
    assert.match(random.stderr, new RegExp(`${current} is not a WAL segment`));

    const renamed = await push(place(next, real));
    assert.equal(renamed.status, 1, renamed.stdout + renamed.stderr);
    assert.match(renamed.stderr, new RegExp(`${next} holds the WAL of [0-9A-F]+/[0-9A-F]+ \\(segment [0-9A-F]+'s\\), not of`));

    // Names that are no segment's: only a timeline history or a backup history file, each as PostgreSQL writes it.
    for (const [name, bytes, said] of [
      ['notes.txt', Buffer.from('hello'), /"notes\.txt" is not a file PostgreSQL archives/],
      ['00000009.history', Buffer.from('garbage\n'), /00000009\.history is not a timeline history file/],
      [`${current}.00000028.backup`, Buffer.from('hello'), /\.backup is not a backup history file/],
    ] as const) {
      const stray = await push(place(name, bytes));
      assert.equal(stray.status, 1, `${name}: ${stray.stdout}${stray.stderr}`);
      assert.match(stray.stderr, said);
    }
    assert.ok(!archived().includes(current) && !archived().includes(next), `nothing was stored (${archived().join(', ')})`);
    assert.deepEqual(archived().filter((f) => !/^[0-9A-F]{24}$/.test(f)), [], 'no stray file was stored');
    // The server's own segments of those names are archived as usual.
    await db!.query('INSERT INTO t VALUES (2)');
    assert.equal(await switchAndArchive(db!), current);
    await db!.query('INSERT INTO t VALUES (3)');
    assert.equal(await switchAndArchive(db!), next);
    assert.ok(archived().includes(current) && archived().includes(next));
  });

  it("refuses another cluster's segment under a name the archive lacks, once the archive holds this cluster's segments", async function () {
    const name = '000000010000000000000040';
    const foreign = otherClusterSegment(name);
    assert.equal(walSegmentProblem(name, foreign.bytes), undefined, 'a well-formed segment of its name');
    const ours = readWalLongHeader(readFileSync(path.join(cluster.dataDir, 'pg_wal', await currentSegment())))!.systemIdentifier;
    assert.notEqual(foreign.sysid, ours);
    const file = place(name, foreign.bytes);
    const refused = await push(file);
    assert.equal(refused.status, 1, refused.stdout + refused.stderr);
    assert.match(refused.stderr, new RegExp(`${name} belongs to another cluster \\(system identifier ${foreign.sysid}; the archive of ${DB} holds cluster ${ours}'s`));
    assert.ok(!archived().includes(name), 'nothing was stored');
    // An archive that holds no segment yet has nothing to compare with: the first segment decides.
    const fresh = await push(file, 'fresh');
    assert.equal(fresh.status, 0, fresh.stderr);
    // And this cluster's archiving goes on.
    await db!.query('INSERT INTO t VALUES (4)');
    await switchAndArchive(db!);
  });

  it('refuses to archive in plaintext when repository.json says "not encrypted" over an encrypted archive', async function () {
    const current = await currentSegment();
    const file = path.join(cluster.dir, 'repo', 'repository.json');
    const original = readFileSync(file, 'utf8');
    const config = JSON.parse(original) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...config, encryption: { profile: 'none' } }));
    try {
      const refused = await push(place(current, readFileSync(path.join(cluster.dataDir, 'pg_wal', current))));
      assert.equal(refused.status, 1, refused.stdout + refused.stderr);
      assert.match(refused.stderr, /says the repository is not encrypted, but it holds 1 key file\(s\): .*Put back its copy .*nothing was written/);
      assert.ok(!archived().includes(current), 'nothing was stored');
    } finally {
      writeFileSync(file, original);
    }
    // With it put back, the segment is archived as usual, encrypted.
    await db!.query('INSERT INTO t VALUES (6)');
    assert.equal(await switchAndArchive(db!), current);
    assert.ok(readdirSync(logDir()).filter((f) => f.startsWith(current)).every((f) => f.endsWith('.gpg')));
  });

  it("verify reports a segment stored without the check (another cluster's, in the WAL a recovery replays)", async function () {
    const backup = await cluster.cli(['backup', DB, '--json']);
    assert.equal(backup.status, 0, backup.stderr);
    await db!.query('INSERT INTO t VALUES (5)');
    await switchAndArchive(db!);
    const good = await cluster.cli(['verify', '--all']);
    assert.equal(good.status, 0, good.stdout + good.stderr);
    // The next segment the server will archive, stored first as a Strata without the check (or
    // the SDK's push without one) would have: another cluster's segment of that name.
    const name = await currentSegment();
    const foreign = otherClusterSegment(name);
    const repo = await openRepository(path.join(cluster.dir, 'repo'), { passphrase: new Passphrase(TEST_PASSPHRASE) });
    try {
      assert.equal((await repo.logArchive.push(DB, name, foreign.bytes)).status, 'stored');
    } finally {
      await repo.close();
    }
    if (isRoot) spawnSync('chown', ['-R', 'postgres', path.join(cluster.dir, 'repo')]);
    const bad = await cluster.cli(['verify', '--all']);
    assert.equal(bad.status, 3, bad.stdout + bad.stderr);
    assert.match(bad.stdout, new RegExp(`${name} is damaged \\(it is of another server's log \\(system identifier ${foreign.sysid}\\)`));
  });
});
