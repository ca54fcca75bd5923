import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { SpawnSyncReturns } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { setTimeout as delay } from 'node:timers/promises';
import type { BackupRecord, KeyListing } from '@strata/sdk';
import { LocalStorage, Passphrase, openRepository, readCatalogContents } from '@strata/sdk';
import { exited, startReplicator } from './helpers/pitr.js';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { DYING_KEY_CHANGE } from './helpers/dying-key-change.js';
import { CLI, FIXTURE_DB, ROOT, TEST_PASSPHRASE, copyInto, json, sqliteDump, strata, useSuiteDir, useTempDir, catalogPath, journalFiles, journalLines, removeCatalog } from './helpers/env.js';
import type { CliResult } from './helpers/env.js';
import { KEY_CHANGES, keyChangeSweep } from './reliability/key-change-sweep.js';

/**
 * `strata key`: several passphrases open one repository through key files, and passphrases and
 * the data key change without re-encrypting any backup (DESIGN.md, "Keys").
 */
describe('keys that can change', function () {
  this.timeout(600_000);
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');
  /** A passphrase in a 0600 file: how it reaches strata without ever being in argv. */
  const secret = (name: string, text: string): string => {
    const file = path.join(dir.path, `${name}.pass`);
    writeFileSync(file, text, { mode: 0o600 });
    return file;
  };
  const alice = (): string => secret('alice', TEST_PASSPHRASE);
  const bob = (): string => secret('bob', 'bob has his own passphrase');
  const carol = (): string => secret('carol', 'carol too');

  /** strata on the repository, with the passphrase of `passfile` (the suite's by default). */
  function run(args: string[], passfile?: string, env: Record<string, string | undefined> = {}, where = repo()): CliResult {
    return strata([...args, '--repo', where, ...(passfile ? ['--passphrase-file', passfile] : [])], { env });
  }
  function ok(args: string[], passfile?: string, env: Record<string, string | undefined> = {}, where = repo()): CliResult {
    const result = run(args, passfile, env, where);
    assert.equal(result.status, 0, `strata ${args.join(' ')}: ${result.stderr}${result.stdout}`);
    return result;
  }
  const keyList = (passfile?: string, where = repo()): KeyListing => json<KeyListing>(ok(['key', 'list', '--json'], passfile, {}, where));
  const backups = (passfile?: string, where = repo()): BackupRecord[] => json<{ backups: BackupRecord[] }>(ok(['list', '--json'], passfile, {}, where)).backups;
  const backup = (db: string, type: string, passfile?: string): BackupRecord => json<{ backup: BackupRecord }>(ok(['backup', db, '--name', 'app', '--type', type, '--json'], passfile)).backup;
  function restored(id: string, passfile?: string): string {
    const out = path.join(dir.path, `restored-${id}-${Math.random().toString(36).slice(2)}.db`);
    ok(['restore', id, '--to', out], passfile);
    return sqliteDump(out);
  }
  /** The plaintext of a key file, decrypted by gpg with the passphrase on its standard input. */
  function openWithGpg(file: string, passphrase: string): string {
    const home = path.join(dir.path, 'gnupg');
    mkdirSync(home, { recursive: true, mode: 0o700 });
    const result = spawnSync('gpg', ['--batch', '--quiet', '--pinentry-mode', 'loopback', '--passphrase-fd', '0', '--decrypt', file], { input: passphrase, encoding: 'utf8', env: { ...process.env, GNUPGHOME: home } });
    spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME: home } });
    assert.equal(result.status, 0, result.stderr);
    return result.stdout;
  }
  /** gpg decrypting `file` with the passphrase in `passfile`, as FORMAT.md's recovery by hand runs it. */
  function gpgWithPassphraseFile(passfile: string, file: string): SpawnSyncReturns<string> {
    const home = path.join(dir.path, 'gnupg');
    mkdirSync(home, { recursive: true, mode: 0o700 });
    const result = spawnSync('gpg', ['--batch', '--quiet', '--pinentry-mode', 'loopback', '--passphrase-file', passfile, '--decrypt', file], { encoding: 'utf8', env: { ...process.env, GNUPGHOME: home } });
    spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME: home } });
    return result;
  }
  /**
   * A passphrase file refused as a new passphrase by init (no repository made at `fresh`), then by
   * key add and key passwd on a repository (its key files unchanged); returns those key files.
   */
  function refusedAsNewPassphrase(passfile: string, fresh: string, message: (step: string) => RegExp): string[] {
    const refusedInit = run(['init'], passfile, {}, fresh);
    assert.equal(refusedInit.status, 2, refusedInit.stderr);
    assert.match(refusedInit.stderr, message('init'));
    assert.ok(!existsSync(fresh), 'no repository was made');
    init();
    const files = readdirSync(path.join(repo(), 'keys')).sort();
    for (const action of ['add', 'passwd']) {
      const refused = run(['key', action, '--new-passphrase-file', passfile]);
      assert.equal(refused.status, 2, refused.stderr);
      assert.match(refused.stderr, message(`key ${action}`));
    }
    assert.deepEqual(readdirSync(path.join(repo(), 'keys')).sort(), files);
    return files;
  }
  /** The S2K count of an OpenPGP message's password packet, as gpg lists it (it needs no passphrase for that). */
  function s2kCount(file: string): number {
    const home = path.join(dir.path, 'gnupg');
    mkdirSync(home, { recursive: true, mode: 0o700 });
    const result = spawnSync('gpg', ['--batch', '--list-packets', file], { input: '', encoding: 'utf8', env: { ...process.env, GNUPGHOME: home } });
    spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME: home } });
    const count = /^\s*salt [0-9A-F]+, count (\d+) /m.exec(result.stdout);
    assert.ok(count, `gpg lists no iterated-salted S2K in ${file}: ${result.stdout}${result.stderr}`);
    return Number(count[1]);
  }
  const built = useSuiteDir();
  /** A repository `strata init` made with the suite's passphrase: made once, each test gets a copy (the first test is about init itself). */
  const init = (): void => {
    const made = path.join(built.path, 'repo');
    if (!existsSync(made)) ok(['init'], undefined, {}, made);
    copyInto(made, repo());
  };
  const source = (): string => {
    const db = path.join(dir.path, 'app.db');
    if (!existsSync(db)) buildRichDatabase(db, { rows: 120 });
    return db;
  };

  it('init makes a data key and a key file; key list shows them without any passphrase, and which one a given passphrase opens', () => {
    ok(['init']);
    const record = backup(source(), 'full');
    const anonymous = strata(['key', 'list', '--json', '--repo', repo()], { env: { STRATA_PASSPHRASE: undefined } });
    assert.equal(anonymous.status, 0, anonymous.stderr);
    const listed = json<KeyListing>(anonymous);
    assert.equal(listed.keyed, true);
    assert.equal(listed.keyFiles.length, 1);
    assert.equal(listed.opened, null, 'without a passphrase nothing says whose key file it is');
    const [file] = listed.keyFiles;
    assert.deepEqual(listed.dataKeys.map((k) => [k.id, k.current, k.backups, k.heldBy]), [[listed.currentKey, true, 1, [file!.id]]]);
    assert.equal(record.encryption.keyId, listed.currentKey, 'the catalog names the data key the artifact needs');
    assert.equal(keyList().opened, file!.id);
    // A passphrase of another repository left in the environment: listed all the same, with a warning.
    const stale = strata(['key', 'list', '--json', '--repo', repo()], { env: { STRATA_PASSPHRASE: 'the passphrase of another repository' } });
    assert.equal(stale.status, 0, stale.stderr);
    assert.equal(json<KeyListing>(stale).opened, null);
    assert.match(stale.stderr, /warning: repository: wrong passphrase.*; listed without marking the key file it opens/);

    // The key file is an OpenPGP message gpg opens with the passphrase: a person can read its data key.
    const text = openWithGpg(path.join(repo(), 'keys', `${file!.id}.asc`), TEST_PASSPHRASE);
    const line = text.split('\n').find((l) => l.startsWith(`${listed.currentKey} `));
    assert.ok(text.startsWith('# strata-key-file 1\n') && line, text.replace(/^(\w{8}) .*$/gm, '$1 <data key>'));
    const dataKey = line.slice(9);
    assert.match(dataKey, /^[A-Za-z0-9_-]{43}$/);
    for (const file of [path.join(repo(), 'repository.json'), catalogPath(repo()), ...journalFiles(repo())]) {
      const content = readFileSync(file, 'utf8');
      assert.ok(!content.includes(dataKey) && !content.includes(TEST_PASSPHRASE), `${file} holds no secret`);
    }
  });

  it('key add: another passphrase (from a file, STRATA_NEW_PASSPHRASE, never argv) opens the repository and restores', () => {
    init();
    const record = backup(source(), 'full');
    const added = json<{ added: { id: string; label: string } }>(ok(['key', 'add', '--label', 'bob', '--new-passphrase-file', bob(), '--json'])).added;
    assert.equal(added.label, 'bob');
    assert.equal(restored(record.id, bob()), sqliteDump(source()));
    ok(['key', 'add', '--label', 'carol'], undefined, { STRATA_NEW_PASSPHRASE: 'carol too' });
    const asCarol = keyList(carol());
    assert.equal(asCarol.opened, asCarol.keyFiles.find((f) => f.label === 'carol')!.id);

    const again = run(['key', 'add', '--new-passphrase-file', bob()]);
    assert.equal(again.status, 2);
    assert.match(again.stderr, /that passphrase already opens key file [0-9a-f]{8} \("bob"\)/);
    const none = run(['key', 'add']);
    assert.equal(none.status, 2);
    assert.match(none.stderr, /--new-passphrase-file FILE, --new-passphrase-command CMD or STRATA_NEW_PASSPHRASE/);
    assert.equal(run(['key', 'add', '--new-passphrase', 'in argv']).status, 2, 'there is no way to put it on the command line');

    const listed = keyList();
    assert.deepEqual(listed.keyFiles.map((f) => [f.label, f.holdsCurrent]), [[null, true], ['bob', true], ['carol', true]]);
    const journal = journalLines(repo()).join('\n');
    const adds = journal.split('\n').filter((l) => l.includes('"kind":"key"') && l.includes('"COMPLETED"'));
    assert.equal(adds.length, 2, 'each key change is journaled');
    assert.ok(!journal.includes('bob has his own') && !journal.includes('carol too'), 'never its passphrase');
  });

  it('key add asks for the new passphrase twice on a terminal, and refuses two that differ', async () => {
    init();
    backup(source(), 'full');
    const typed = await onTerminal(['key', 'add', '--repo', repo()], [TEST_PASSPHRASE, 'typed at the prompt', 'typed at the prompt'], dir.path);
    assert.equal(typed.status, 0, typed.screen);
    assert.match(typed.screen, /Repository passphrase:[\s\S]*New passphrase:[\s\S]*Repeat the new passphrase:/);
    assert.equal(ok(['verify', 'latest'], secret('typed', 'typed at the prompt')).status, 0);
    const differ = await onTerminal(['key', 'add', '--repo', repo()], [TEST_PASSPHRASE, 'one thing', 'another'], dir.path);
    assert.equal(differ.status, 2);
    assert.match(differ.screen, /the two passphrases differ/);
    assert.equal(keyList().keyFiles.length, 2);
  });

  it('key remove: that passphrase stops opening the repository (exit 4); the last key file, your own, and the only holder of a needed data key are refused', () => {
    init();
    const record = backup(source(), 'full');
    ok(['key', 'add', '--label', 'bob', '--new-passphrase-file', bob()]);
    const mine = keyList().opened!;
    const bobs = keyList(bob()).opened!;

    const own = run(['key', 'remove', mine]);
    assert.equal(own.status, 2);
    assert.match(own.stderr, /is the key file your passphrase opens; .*--force/);
    ok(['key', 'remove', bobs]);
    const refused = run(['verify', record.id], bob());
    assert.equal(refused.status, 4, 'a removed passphrase is a wrong passphrase');
    assert.match(refused.stderr, /wrong passphrase: it opens none of the repository's 1 key file/);
    assert.deepEqual(readdirSync(path.join(repo(), 'keys')), [`${mine}.asc`]);
    const last = run(['key', 'remove', mine, '--force']);
    assert.equal(last.status, 2);
    assert.match(last.stderr, /is the only key file; without it no passphrase opens the repository/);
    assert.equal(run(['key', 'remove', 'feedf00d']).status, 2);

    // Carol's key file lacks the data key a rotation made (only Alice's holds it): removing Alice's
    // would leave it, and the backup made under it, in no key file.
    ok(['key', 'add', '--label', 'carol', '--new-passphrase-file', carol()]);
    const rotated = json<{ dataKey: string }>(ok(['key', 'rotate', '--json'])).dataKey;
    backup(source(), 'full');
    const stranded = run(['key', 'remove', mine], carol());
    assert.equal(stranded.status, 2);
    assert.match(stranded.stderr, new RegExp(`only key file holding data key\\(s\\) ${rotated} \\(the current data key, needed by 1 backup\\(s\\)\\)`));
    assert.equal(keyList().keyFiles.length, 2, 'nothing was removed');
  });

  it('a running replicator seals new segments under a key rotated meanwhile, and stops once its key file lacks the current key; key remove keeps a key that only segments or archived log files need', async () => {
    init();
    ok(['key', 'add', '--label', 'bob', '--new-passphrase-file', bob()]);
    const db = path.join(dir.path, 'live.db');
    const live = new Database(db);
    live.pragma('journal_mode = WAL');
    live.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('first')");
    const replicator = await startReplicator(repo(), db);
    try {
      const segmentsUnder = async (keyId: string): Promise<number> => ((await readCatalogContents(new LocalStorage(repo())))?.segments ?? []).filter((s) => s.encryption.keyId === keyId).length;
      // Alice's passphrase (the replicator's) makes a new data key that only her key file holds.
      const rotated = json<{ dataKey: string }>(ok(['key', 'rotate', '--json'])).dataKey;
      for (let i = 0; (await segmentsUnder(rotated)) === 0; i++) {
        assert.ok(i < 600, `no segment under the rotated key ${rotated} after 3 minutes:\n${replicator.stderr()}`);
        live.prepare('INSERT INTO t (v) VALUES (?)').run(`row ${i}`);
        await delay(300);
      }
      // An archived log file under the same key, in a database the catalog lists (as `strata wal-push` with Alice's passphrase stores one).
      const opened = await openRepository(repo(), { passphrase: new Passphrase(TEST_PASSPHRASE), tempDir: path.join(dir.path, 'tmp') });
      assert.equal((await opened.logArchive.push('live', '000000010000000000000003', new Uint8Array(64 * 1024).fill(7))).status, 'stored');
      await opened.close();

      // Bob rotates without bringing Alice's key file along: the replicator stops rather than go on under a key being retired.
      ok(['key', 'rotate'], bob());
      const stopped = exited(replicator.child);
      for (let i = 0; replicator.child.exitCode === null && i < 600; i++) {
        live.prepare('INSERT INTO t (v) VALUES (?)').run(`after ${i}`);
        await delay(300);
      }
      const outcome = await stopped;
      assert.equal(outcome.code, 4, replicator.stderr());
      assert.match(replicator.stderr(), /replicate: the repository's keys changed while it ran.*data key/s);

      const listed = keyList(bob()).dataKeys.find((k) => k.id === rotated)!;
      assert.deepEqual([listed.backups, listed.logFiles, listed.segments > 0], [0, 1, true], JSON.stringify(listed));
      const aliceFile = keyList().opened!;
      const refused = run(['key', 'remove', aliceFile], bob());
      assert.equal(refused.status, 2, refused.stdout);
      assert.match(refused.stderr, new RegExp(`only key file holding data key\\(s\\) ${rotated} \\(needed by \\d+ segment\\(s\\) of continuous protection, 1 archived log file\\(s\\)\\)`));
      assert.equal(keyList().keyFiles.length, 2, 'nothing was removed');
      // What the replicator shipped restores, with the passphrase that holds its keys.
      const asOf = path.join(dir.path, 'as-of.db');
      ok(['restore', '--db', 'live', '--as-of', new Date().toISOString(), '--to', asOf]);
      const restoredRows = new Database(asOf, { readonly: true });
      assert.ok((restoredRows.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n > 1);
      restoredRows.close();
      // A lost catalog rebuilt with Bob's key file, which cannot open the segments under Alice's
      // rotated key, is refused rather than written without them; Alice's rebuilds them all.
      const segmentsBefore = (await readCatalogContents(new LocalStorage(repo())))!.segments.length;
      removeCatalog(repo());
      const withBob = run(['list', '--json'], bob());
      assert.equal(withBob.status, 4, withBob.stdout);
      assert.match(json<{ error: { message: string } }>(withBob).error.message, /rebuild-catalog: \d+ segment\(s\) of continuous protection .* open with none of the data keys your key file holds/);
      assert.ok(!existsSync(path.join(repo(), 'catalog')) || readdirSync(path.join(repo(), 'catalog')).length === 0, 'no catalog without those segments was written');
      ok(['list']);
      assert.equal((await readCatalogContents(new LocalStorage(repo())))!.segments.length, segmentsBefore);
    } finally {
      replicator.child.kill('SIGKILL');
      live.close();
    }
  });

  it('key passwd: the new passphrase opens, the old one no longer does (exit 4), the label stays', () => {
    ok(['init', '--label', 'ops']);
    const record = backup(source(), 'full');
    const before = keyList().keyFiles[0]!;
    const changed = json<{ removed: { id: string }; added: { id: string; label: string } }>(ok(['key', 'passwd', '--new-passphrase-file', bob(), '--json']));
    assert.equal(changed.removed.id, before.id);
    assert.equal(changed.added.label, 'ops');
    const old = run(['verify', record.id]);
    assert.equal(old.status, 4);
    assert.match(old.stderr, /wrong passphrase/);
    assert.equal(restored(record.id, bob()), sqliteDump(source()));
    assert.deepEqual(readdirSync(path.join(repo(), 'keys')), [`${changed.added.id}.asc`], 'the old key file is gone');
  });

  it('an older repository.json put back after a rotate: passwd, add, rotate and remove are refused, naming the data key it does not list, rather than writing key files without it', () => {
    init();
    const db = source();
    backup(db, 'full');
    const before = readFileSync(path.join(repo(), 'repository.json'));
    ok(['key', 'rotate']);
    const newer = backup(db, 'full');
    const rotated = newer.encryption.keyId!;
    writeFileSync(path.join(repo(), 'repository.json'), before);
    const keyFiles = readdirSync(path.join(repo(), 'keys')).sort();
    for (const args of [['key', 'passwd', '--new-passphrase-file', bob()], ['key', 'add', '--new-passphrase-file', carol()], ['key', 'rotate']]) {
      const refused = run([...args, '--json']);
      assert.equal(refused.status, 4, `${args.join(' ')}: ${refused.stdout}`);
      const error = json<{ error: { code: string; message: string } }>(refused).error;
      assert.equal(error.code, 'KEY_MISSING');
      assert.match(error.message, new RegExp(`holds data key\\(s\\) ${rotated} \\(needed by 1 backup\\(s\\)\\) that repository.json does not list.*put back the newest copy.*nothing was changed`));
    }
    assert.deepEqual(readdirSync(path.join(repo(), 'keys')).sort(), keyFiles, 'no key file was written or removed');
    assert.equal(restored(newer.id), sqliteDump(db), 'the backup under the rotated key still restores');
  });

  it('a repository.json that says "not encrypted" over a repository with key files or encrypted backups is refused, and nothing is written in plaintext', () => {
    init();
    const db = source();
    backup(db, 'full');
    const file = path.join(repo(), 'repository.json');
    const config = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...config, encryption: { profile: 'none' } }));
    const artifacts = (): string[] => readdirSync(path.join(repo(), 'backups', 'app')).sort();
    const before = artifacts();
    const refused = run(['backup', db, '--name', 'app', '--json'], alice());
    assert.equal(refused.status, 1, refused.stdout);
    assert.match(json<{ error: { message: string } }>(refused).error.message, /says the repository is not encrypted, but it holds 1 key file\(s\): .*Put back its copy .*nothing was written/);
    // Without key files (a repository from before them), its encrypted backups tell the same.
    rmSync(path.join(repo(), 'keys'), { recursive: true });
    const again = run(['backup', db, '--name', 'app']);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /but it holds 1 encrypted backup\(s\)/);
    assert.deepEqual(artifacts(), before, 'no artifact was written');
    // A passphrase given on the command line to a repository that really is unencrypted is said to be unused.
    const plain = path.join(dir.path, 'plain');
    ok(['init', '--no-encryption'], undefined, {}, plain);
    const written = ok(['backup', db, '--name', 'app'], alice(), {}, plain);
    assert.match(written.stderr, /is not encrypted \(made with init --no-encryption\): the passphrase of --passphrase-file is not used, and what this command writes is stored unencrypted/);
  });

  it('a process that was refused over a "not encrypted" repository.json writes encrypted again once it is put back, without a restart', async () => {
    init();
    const db = source();
    backup(db, 'full');
    const file = path.join(repo(), 'repository.json');
    const original = readFileSync(file, 'utf8');
    // Opened while the edited copy is in place, as a daemon started then would be.
    writeFileSync(file, JSON.stringify({ ...(JSON.parse(original) as Record<string, unknown>), encryption: { profile: 'none' } }));
    const repository = await openRepository(repo(), { passphrase: new Passphrase(TEST_PASSPHRASE) });
    try {
      await assert.rejects(repository.backup(db, { database: 'app' }), /says the repository is not encrypted, but it holds 1 key file\(s\)/);
      writeFileSync(file, original);
      const written = await repository.backup(db, { database: 'app' });
      assert.equal(written.encryption.profile, 'compat');
      assert.match(written.key, /\.gpg$/);
    } finally {
      await repository.close();
    }
  });

  it('a new passphrase with a line break in it, which gpg --passphrase-file could not read, is refused by init, key add and key passwd', () => {
    const twoLines = path.join(dir.path, 'two-lines.pass');
    writeFileSync(twoLines, 'secret one\n\n');
    const fresh = path.join(dir.path, 'fresh');
    refusedAsNewPassphrase(twoLines, fresh, (step) => new RegExp(`${step}: the new passphrase contains a line break${step === 'init' ? ' .*gpg --passphrase-file would not read' : ''}`));
  });

  it('a new passphrase in a file with a Windows line end (CR LF), which gpg --passphrase-file reads with its CR, or not in UTF-8, is refused by init, key add, key passwd and key migrate; such a file still opens the repository', () => {
    const crlf = path.join(dir.path, 'crlf.pass');
    writeFileSync(crlf, `${TEST_PASSPHRASE}\r\n`, { mode: 0o600 });
    const fresh = path.join(dir.path, 'fresh');
    const files = refusedAsNewPassphrase(crlf, fresh, (step) => (step === 'init' ? /ends its line with CR LF .*gpg --passphrase-file.* would read the CR/ : /ends its line with CR LF/));
    // Why: gpg, given the same file, cannot open the key file that the passphrase without the CR sealed.
    const keyFile = path.join(repo(), 'keys', files.find((f) => f.endsWith('.asc'))!);
    assert.notEqual(gpgWithPassphraseFile(crlf, keyFile).status, 0, 'gpg opened the key file with a CR at the end of the passphrase');
    // Opening is unchanged: the same file still opens the repository it always opened.
    ok(['key', 'list'], crlf);
    // A file in another encoding than UTF-8: gpg would take its bytes, Strata U+FFFD for each.
    const latin1 = path.join(dir.path, 'latin1.pass');
    writeFileSync(latin1, Buffer.from('p\xe4sswort of bob\n', 'latin1'), { mode: 0o600 });
    const notUtf8 = run(['key', 'add', '--new-passphrase-file', latin1]);
    assert.equal(notUtf8.status, 2, notUtf8.stderr);
    assert.match(notUtf8.stderr, /is not UTF-8 text/);
    assert.deepEqual(readdirSync(path.join(repo(), 'keys')).sort(), files);
    // key migrate seals the first key file with the passphrase that opens the repository.
    const legacy = path.join(dir.path, 'legacy');
    cpSync(path.join(ROOT, 'fixtures/legacy-v1/sqlite/repo'), legacy, { recursive: true });
    const refusedMigrate = run(['key', 'migrate'], crlf, {}, legacy);
    assert.equal(refusedMigrate.status, 2, refusedMigrate.stderr);
    assert.match(refusedMigrate.stderr, /ends its line with CR LF/);
    assert.match(ok(['key', 'list'], crlf, {}, legacy).stdout, /made before key files/);
    // A UTF-8 file that starts with a byte order mark (as some Windows editors save) is fine: its
    // mark is part of the passphrase for Strata, when sealing and when opening, as it is for gpg.
    const marked = path.join(dir.path, 'bom.pass');
    writeFileSync(marked, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('bob with a mark\n')]), { mode: 0o600 });
    const withMark = path.join(dir.path, 'with-mark');
    ok(['init'], marked, {}, withMark);
    ok(['list'], marked, {}, withMark);
    const markedKey = path.join(withMark, 'keys', readdirSync(path.join(withMark, 'keys')).find((f) => f.endsWith('.asc'))!);
    const openedByGpg = gpgWithPassphraseFile(marked, markedKey);
    assert.equal(openedByGpg.status, 0, openedByGpg.stderr);
  });

  it('an export of modern (AEAD) artifacts is refused by a compat repository, whose every artifact gpg opens; a modern one takes it', () => {
    const modern = path.join(dir.path, 'modern');
    ok(['init', '--encryption', 'modern'], undefined, {}, modern);
    ok(['backup', source(), '--name', 'app'], undefined, {}, modern);
    const file = path.join(dir.path, 'modern-export.tar.gz');
    ok(['export', '--all', '--out', file], undefined, {}, modern);
    init();
    const refused = run(['import', file]);
    assert.equal(refused.status, 2, refused.stdout);
    assert.match(refused.stderr, /import: the export is encrypted with the modern profile \(AEAD\), which gpg cannot open, and this repository is compat/);
    assert.deepEqual(backups(), [], 'nothing was imported');
    const another = path.join(dir.path, 'modern-2');
    ok(['init', '--encryption', 'modern'], undefined, {}, another);
    ok(['import', file], undefined, {}, another);
    assert.equal(backups(undefined, another).length, 1);
  });

  it('key rotate: new backups use the new data key; older ones, and a chain that spans both keys, stay restorable, and nothing is re-encrypted', () => {
    init();
    const db = source();
    const full = backup(db, 'full');
    const atFull = sqliteDump(db);
    const artifact = readFileSync(path.join(repo(), full.key));
    const rotated = json<{ dataKey: string; updated: { id: string }[]; stale: unknown[] }>(ok(['key', 'rotate', '--json']));
    assert.notEqual(rotated.dataKey, full.encryption.keyId);
    assert.deepEqual(rotated.stale, []);
    mutate(db, 1);
    const incremental = backup(db, 'incremental');
    assert.equal(incremental.parent, full.id);
    assert.equal(incremental.encryption.keyId, rotated.dataKey);
    assert.deepEqual(
      backups().map((b) => [b.id, b.encryption.keyId]),
      [
        [full.id, full.encryption.keyId],
        [incremental.id, rotated.dataKey],
      ],
    );
    assert.ok(readFileSync(path.join(repo(), full.key)).equals(artifact), 'the older artifact is untouched');
    assert.equal(restored(full.id), atFull);
    assert.equal(restored(incremental.id), sqliteDump(db));
    const verify = ok(['verify', incremental.id, '--level', 'full']);
    assert.match(verify.stdout, new RegExp(`PASSED \\(data keys ${full.encryption.keyId}, ${rotated.dataKey}\\)`));
    const text = ok(['list']).stdout;
    assert.match(text, /DATA KEY/);
    assert.match(text, new RegExp(`${incremental.id} .* ${rotated.dataKey} `));
  });

  it('a key file without the current data key: its backups fail with exit 4 and say why, verify records nothing against good backups, and --also-passphrase-file brings it along', () => {
    init();
    ok(['key', 'add', '--label', 'bob', '--new-passphrase-file', bob()]);
    const db = source();
    const full = backup(db, 'full');
    const rotate = ok(['key', 'rotate']);
    assert.match(rotate.stdout, /1 key file\(s\) do not hold the current data key [0-9a-f]{8}: [0-9a-f]{8} \("bob"\)/);
    assert.match(rotate.stdout, /--also-passphrase-file/);

    const refused = run(['backup', db, '--name', 'app', '--type', 'incremental'], bob());
    assert.equal(refused.status, 4);
    assert.match(refused.stderr, /key file [0-9a-f]{8} \("bob"\), the one your passphrase opens, does not hold the repository's current data key [0-9a-f]{8}/);
    assert.match(refused.stderr, /strata key add.*strata key remove|strata key rotate --also-passphrase-file/);
    assert.equal(backups().length, 1, 'nothing was recorded');
    assert.equal(restored(full.id, bob()), sqliteDump(db), 'older backups stay readable with it');

    mutate(db, 1);
    const incremental = backup(db, 'incremental');
    const verify = run(['verify', '--all'], bob());
    assert.equal(verify.status, 4);
    assert.match(verify.stdout, new RegExp(`${full.id}: PASSED`));
    assert.match(verify.stdout, new RegExp(`${incremental.id}: NOT VERIFIED\\n  .*it needs data key ${incremental.encryption.keyId}, which key file [0-9a-f]{8} \\("bob"\\)`));
    assert.equal(backups().find((b) => b.id === incremental.id)!.verification, null, 'not recorded as a failed verification');

    ok(['key', 'rotate', '--also-passphrase-file', bob()]);
    assert.deepEqual(keyList(bob()).keyFiles.map((f) => f.holdsCurrent), [true, true]);
    mutate(db, 2);
    ok(['backup', db, '--name', 'app', '--type', 'incremental'], bob());
    assert.equal(ok(['verify', '--all'], bob()).status, 0);
  });

  it('rebuilding a lost catalog with a key file that lacks some data key is refused, rather than dropping the backups it cannot open', () => {
    init();
    ok(['key', 'add', '--label', 'bob', '--new-passphrase-file', bob()]);
    const db = source();
    backup(db, 'full');
    ok(['key', 'rotate']);
    mutate(db, 1);
    backup(db, 'incremental');
    removeCatalog(repo());
    const refused = run(['list', '--json'], bob());
    assert.equal(refused.status, 4);
    assert.equal(json<{ error: { code: string } }>(refused).error.code, 'KEY_MISSING');
    assert.ok(!existsSync(path.join(repo(), 'catalog')), 'no catalog that lacks a backup was written');
    const rebuilt = backups();
    assert.deepEqual(rebuilt.map((b) => b.type), ['full', 'incremental']);
    assert.equal(new Set(rebuilt.map((b) => b.encryption.keyId)).size, 2, 'each with the data key that opened it');
  });

  it('key migrate: a repository of the previous release moves onto key files, and every old restore point restores as it was, also after passwd', () => {
    const legacy = path.join(ROOT, 'fixtures/legacy-v1/sqlite');
    cpSync(path.join(legacy, 'repo'), repo(), { recursive: true });
    const expected = (id: string): string => gunzipSync(readFileSync(path.join(legacy, 'expected', `${id}.dump.gz`))).toString('utf8');
    const early = run(['key', 'add', '--new-passphrase-file', bob()]);
    assert.equal(early.status, 2);
    assert.match(early.stderr, /run `strata key migrate` first/);
    assert.match(ok(['key', 'list']).stdout, /made before key files[\s\S]*strata key migrate/);
    // Key stretching guards what a person's passphrase protects; a data key Strata generated is 256
    // random bits and goes without (docs/FORMAT.md, "Artifact layers").
    const strong = 16_777_216;
    const sample = path.join(dir.path, 'sample.db');
    copyFileSync(FIXTURE_DB, sample);
    const before = json<{ backup: BackupRecord }>(ok(['backup', sample, '--name', 'sample', '--type', 'full', '--json'])).backup;
    assert.equal(s2kCount(path.join(repo(), before.key)), strong, 'an artifact under the passphrase itself (before key files) is stretched');

    const migrated = json<{ keyFile: { id: string }; dataKey: string; legacyKey: string }>(ok(['key', 'migrate', '--json']));
    const config = JSON.parse(readFileSync(path.join(repo(), 'repository.json'), 'utf8'));
    // Format 3 (the object layout, which its first open moved it onto); key files show in its encryption section.
    assert.equal(config.version, 3);
    assert.equal(config.encryption.currentKey, migrated.dataKey);
    assert.equal(config.encryption.keyCheck, undefined, 'the key check is gone');
    assert.equal(config.encryption.legacyKey, migrated.legacyKey);
    assert.ok(backups().every((b) => b.encryption.keyId === migrated.legacyKey), 'the old backups need the old passphrase, now a data key');
    ok(['verify', '--all', '--level', 'full']);

    ok(['key', 'passwd', '--new-passphrase-file', bob()]);
    assert.equal(run(['verify', 'latest', '--db', 'app']).status, 4, 'the old passphrase no longer opens the repository');
    for (const id of ['app_full_20261120_100000_2e4f', 'app_incremental_20261120_120000_e9ad', 'app_differential_20261120_130000_2607']) {
      assert.equal(restored(id, bob()), expected(id), `${id} restores what the database held then`);
    }
    // Without the layout cache, the incremental reads its parent's layout from the artifact and
    // caches it again, under the parent's key: the old passphrase.
    rmSync(path.join(repo(), 'cache/layouts'), { recursive: true, force: true });
    const fresh = json<{ backup: BackupRecord }>(ok(['backup', sample, '--name', 'sample', '--type', 'incremental', '--json'], bob())).backup;
    assert.equal(fresh.encryption.keyId, migrated.dataKey);
    assert.equal(s2kCount(path.join(repo(), fresh.key)), 1024, 'an artifact under the data key migrate made is not stretched');
    assert.equal(s2kCount(path.join(repo(), `cache/layouts/sample/${before.id}.idx.gpg`)), strong, 'a cache under the old passphrase (the legacy data key) is stretched');
    for (const name of readdirSync(path.join(repo(), 'keys'))) assert.equal(s2kCount(path.join(repo(), 'keys', name)), strong, `key file ${name} is stretched`);
  });

  it('an export carries the key files its backups need: a repository whose passphrase opens one imports it and keeps the data keys', () => {
    init();
    ok(['key', 'add', '--label', 'bob', '--new-passphrase-file', bob()]);
    const record = backup(source(), 'full');
    const file = path.join(dir.path, 'bundle.tar.gz');
    ok(['export', '--all', '--out', file]);
    const listing = spawnSync('tar', ['-tzf', file], { encoding: 'utf8' }).stdout.split('\n');
    assert.equal(listing.filter((n) => /^keys\/[0-9a-f]{8}\.asc$/.test(n)).length, 2);

    const target = path.join(dir.path, 'target');
    ok(['init'], bob(), {}, target);
    ok(['import', file], bob(), {}, target);
    const keys = keyList(bob(), target);
    const imported = keys.dataKeys.find((k) => k.id === record.encryption.keyId)!;
    assert.deepEqual([imported.origin, imported.backups, imported.heldBy], ['import', 1, [keys.opened]]);
    const out = path.join(dir.path, 'from-target.db');
    ok(['restore', record.id, '--to', out], bob(), {}, target);
    assert.equal(sqliteDump(out), sqliteDump(source()));
  });

  it('an export made before key files imports into a repository with them, opened by that repository\'s passphrase', () => {
    const legacy = path.join(ROOT, 'fixtures/legacy-v1/sqlite');
    const old = path.join(dir.path, 'old');
    cpSync(path.join(legacy, 'repo'), old, { recursive: true });
    const file = path.join(dir.path, 'old.zip');
    ok(['export', '--all', '--out', file], undefined, {}, old);
    init();
    const imported = json<{ imported: string[] }>(ok(['import', file, '--json'])).imported;
    const keys = keyList();
    const brought = keys.dataKeys.find((k) => k.origin === 'import')!;
    assert.deepEqual([brought.backups, brought.heldBy], [imported.length, [keys.opened]]);
    assert.ok(backups().every((b) => b.encryption.keyId === brought.id), 'the imported records name the key that opens them here');
    const id = 'app_differential_20261120_130000_2607';
    assert.equal(restored(id), gunzipSync(readFileSync(path.join(legacy, 'expected', `${id}.dump.gz`))).toString('utf8'));
    const zed = secret('zed', 'not that one');
    ok(['init'], zed, {}, path.join(dir.path, 'other'));
    const refused = run(['import', file], zed, {}, path.join(dir.path, 'other'));
    assert.equal(refused.status, 4);
    assert.match(refused.stderr, /made in a repository with a different passphrase, and no data key your key file holds opens it/);
  });

  it('a damaged key section of repository.json is reported as damaged (exit 1), not as a wrong passphrase', () => {
    init();
    const file = path.join(repo(), 'repository.json');
    const config = JSON.parse(readFileSync(file, 'utf8'));
    config.encryption.keyFiles[0].dataKeys = ['00000000'];
    writeFileSync(file, JSON.stringify(config));
    const result = run(['list', '--json']);
    assert.equal(result.status, 1);
    assert.match(json<{ error: { message: string } }>(result).error.message, /repository\.json .* is damaged \(key file [0-9a-f]{8} lists data keys the repository does not have\)/);
  });

  it('a damaged key file (a character changed, or cut short) is reported as damaged, naming it and what to do (exit 1), not as a wrong passphrase', () => {
    init();
    backup(source(), 'full');
    const mine = keyList().opened!;
    const file = path.join(repo(), 'keys', `${mine}.asc`);
    const original = readFileSync(file, 'utf8');
    const flipped = (text: string): string => {
      const lines = text.split('\n');
      const at = lines.indexOf('') + 2; // a whole line of the base64 body
      const line = lines[at]!;
      lines[at] = `${line.slice(0, 10)}${line[10] === 'A' ? 'B' : 'A'}${line.slice(11)}`;
      return lines.join('\n');
    };
    const damaged = (what: RegExp): void => {
      const result = run(['verify', 'latest', '--json']);
      assert.equal(result.status, 1, result.stderr);
      const error = json<{ error: { code: string; message: string } }>(result).error;
      assert.equal(error.code, 'ARTIFACT_CORRUPT');
      assert.match(error.message, new RegExp(`^repository: key file keys/${mine}\\.asc is damaged \\(${what.source}\\), so no passphrase could be tried: this says nothing against yours\\. Put back a copy of the key file \\(from the mirror, another copy of the repository, or an export that holds it\\), or open the repository with the passphrase of an intact key file and \`strata key add\` a new one`));
    };
    writeFileSync(file, flipped(original));
    damaged(/its checksum does not match its contents \(it was changed\)/);
    writeFileSync(file, original.slice(0, Math.floor(original.length / 2)));
    damaged(/it is cut short \(it has no end line\)/);
    writeFileSync(file, original);
    ok(['verify', 'latest']);

    // With another key file intact: its passphrase opens the repository; a passphrase no readable
    // key file opens is wrong (exit 4), and the damaged one is named, in case it was that one's.
    ok(['key', 'add', '--label', 'bob', '--new-passphrase-file', bob()]);
    const bobs = keyList(bob()).opened!;
    const bobsFile = path.join(repo(), 'keys', `${bobs}.asc`);
    writeFileSync(bobsFile, flipped(readFileSync(bobsFile, 'utf8')));
    ok(['verify', 'latest']);
    const wrong = run(['verify', 'latest'], carol());
    assert.equal(wrong.status, 4, wrong.stderr);
    assert.match(wrong.stderr, new RegExp(`wrong passphrase: it opens none of the 1 readable key file\\(s\\) of the repository's 2; key file\\(s\\) keys/${bobs}\\.asc \\(its checksum does not match its contents \\(it was changed\\)\\) are damaged, so your passphrase could not be tried on them`));
  });

  it('strata key --help and strata key <action> --help describe the commands', () => {
    for (const args of [['key', '--help'], ['key', 'rotate', '--help'], ['key', 'help']]) {
      const result = strata(args);
      assert.equal(result.status, 0, result.stderr);
      for (const word of ['add', 'remove', 'passwd', 'rotate', 'migrate', '--also-passphrase-file', '--new-passphrase-file', 'STRATA_NEW_PASSPHRASE']) assert.ok(result.stdout.includes(word), word);
    }
    assert.match(strata(['--help']).stdout, /key list\|add\|remove\|passwd\|rotate\|migrate/);
    assert.equal(strata(['key', 'frobnicate', '--repo', repo()]).status, 2);
  });

  it('key remove killed at any write never leaves the revoked key file unlisted in keys/; a retry finishes, or says it was already removed (exit 0)', function () {
    init();
    backup(source(), 'full');
    ok(['key', 'add', '--label', 'bob', '--new-passphrase-file', bob()]);
    const bobs = keyList(bob()).opened!;
    const template = path.join(dir.path, 'remove-template');
    cpSync(repo(), template, { recursive: true });
    // `repo.keys.remove` in a child that SIGKILLs itself just before its Nth write to storage.
    const script = path.join(dir.path, 'dying-key-remove.mjs');
    writeFileSync(script, DYING_KEY_CHANGE);
    const listed = (where: string): string[] => (JSON.parse(readFileSync(path.join(where, 'repository.json'), 'utf8')) as { encryption: { keyFiles: { id: string }[] } }).encryption.keyFiles.map((f) => f.id);
    let killedAt = 0;
    for (let killAt = 1; ; killAt++) {
      assert.ok(killAt < 60, 'the removal makes fewer than 60 writes');
      const copy = path.join(dir.path, `remove-kill-${killAt}`);
      cpSync(template, copy, { recursive: true });
      const child = spawnSync(process.execPath, [script], { env: { ...process.env, REPO: copy, KILL_AT: String(killAt), OLD: TEST_PASSPHRASE, ACTION: 'remove', ID: bobs }, encoding: 'utf8' });
      if (child.status === 0) break;
      assert.equal(child.signal, 'SIGKILL', child.stderr);
      killedAt++;
      // Before anything else opens the repository: either the removal did not happen (still listed)
      // or the revoked passphrase's key file is gone.
      const file = path.join(copy, 'keys', `${bobs}.asc`);
      assert.ok(listed(copy).includes(bobs) || !existsSync(file), `killed at write ${killAt}: ${bobs}.asc is in keys/ but repository.json no longer lists it`);
      const retry = run(['key', 'remove', bobs], undefined, {}, copy);
      assert.equal(retry.status, 0, `killed at write ${killAt}, the retry: ${retry.stderr}`);
      assert.ok(!listed(copy).includes(bobs) && !existsSync(file), `killed at write ${killAt}: removed after the retry`);
      assert.equal(run(['verify', 'latest'], bob(), {}, copy).status, 4, 'the revoked passphrase opens nothing');
      rmSync(copy, { recursive: true, force: true });
    }
    assert.ok(killedAt > 3, `the removal has several writes to be killed before (${killedAt})`);
    // A retry after a removal that went through says so and succeeds.
    ok(['key', 'remove', bobs]);
    const again = ok(['key', 'remove', bobs]);
    assert.match(again.stdout, new RegExp(`key file ${bobs} was already removed \\(at \\S+\\): its passphrase no longer opens the repository; nothing more to do`));
    assert.equal(run(['key', 'remove', 'feedf00d']).status, 2, 'an id never removed is still unknown');
  });

  it('a key file repository.json does not list (a key passwd killed before deleting the old one) is removed by the next command of any kind, which says so', () => {
    init();
    backup(source(), 'full');
    ok(['key', 'add', '--label', 'bob', '--new-passphrase-file', bob()]);
    const bobs = keyList(bob()).opened!;
    // The state such a kill leaves: repository.json no longer lists Bob's key file, which is still there.
    const config = path.join(repo(), 'repository.json');
    const raw = JSON.parse(readFileSync(config, 'utf8')) as { encryption: { keyFiles: { id: string }[] } };
    raw.encryption.keyFiles = raw.encryption.keyFiles.filter((f) => f.id !== bobs);
    writeFileSync(config, JSON.stringify(raw, null, 2));
    assert.ok(existsSync(path.join(repo(), 'keys', `${bobs}.asc`)));
    const next = ok(['backup', source(), '--name', 'app', '--type', 'incremental']);
    assert.match(next.stderr, new RegExp(`strata: warning: removed keys/${bobs}\\.asc: repository\\.json does not list it \\(a key change was killed before it finished\\), so its passphrase no longer opens the repository`));
    assert.deepEqual(readdirSync(path.join(repo(), 'keys')), [`${keyList().opened!}.asc`]);
    assert.equal(run(['verify', 'latest'], bob()).status, 4);
  });

  describe('a process killed at a step of a change', () => {
    // An even spread of kill points, from the first write to the last; `npm run test:soak`
    // (scenario `keys`) kills at every one.
    for (const action of KEY_CHANGES) {
      it(`${action}: each kill point leaves ${action === 'passwd' ? 'exactly one of the old and new passphrases' : 'every passphrase that opened it'} opening the repository and its backup, and the next change sweeps the leftovers`, () => {
        const result = keyChangeSweep({ work: path.join(dir.path, 'sweep'), actions: [action], points: 3 });
        assert.deepEqual(result.problems, []);
        assert.ok(result.writes[action]! > 3, `the change has several steps to be killed between (it makes ${result.writes[action]} writes)`);
        assert.equal(result.runs, 4, 'the whole change and 3 kill points');
      });
    }
  });
});

/**
 * Runs the CLI on a real pseudo-terminal (util-linux `script`), typing `answers` one per prompt
 * as a person would, and returns what the terminal showed and the exit status.
 */
function onTerminal(args: string[], answers: string[], cwd: string): Promise<{ status: number; screen: string }> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env['STRATA_PASSPHRASE'];
    delete env['CI'];
    const command = [process.execPath, CLI, ...args].map((w) => `'${w.replaceAll("'", `'\\''`)}'`).join(' ');
    const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    let typed = 0;
    child.stdout.on('data', (d: Buffer) => {
      screen += d.toString();
      const prompts = (screen.match(/passphrase: /gi) ?? []).length;
      while (typed < prompts && typed < answers.length) child.stdin.write(`${answers[typed++]}\r`);
      if (typed >= answers.length && prompts > answers.length) child.stdin.end();
    });
    child.on('close', (status) => resolve({ status: status ?? -1, screen }));
  });
}
