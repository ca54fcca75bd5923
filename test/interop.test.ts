import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildRichDatabase } from './helpers/databases.js';
import { ROOT, TEST_PASSPHRASE, json, sqliteDump, sqliteQuery, strata, useTempDir } from './helpers/env.js';
import { recipe } from './helpers/format-recipes.js';

interface ListJson {
  backups: { id: string; key: string; encryption: { profile: string; keyId?: string } }[];
}

/** OpenPGP's iterated and salted S2K with SHA-256 (RFC 9580 3.7.1.3), for a 32-byte key. */
function s2kSha256(passphrase: string, salt: Buffer, countByte: number): Buffer {
  const count = (16 + (countByte & 15)) << ((countByte >> 4) + 6);
  const unit = Buffer.concat([salt, Buffer.from(passphrase, 'utf8')]);
  const block = Buffer.concat(new Array<Buffer>(Math.ceil(65536 / unit.length)).fill(unit));
  const hash = createHash('sha256');
  let left = Math.max(count, unit.length);
  for (; left >= block.length; left -= block.length) hash.update(block);
  hash.update(block.subarray(0, left));
  return hash.digest();
}

describe('interoperability with standard tools', () => {
  const dir = useTempDir();
  let gnupgHome: string;

  beforeEach(() => {
    gnupgHome = path.join(dir.path, 'gnupg');
    mkdirSync(gnupgHome, { mode: 0o700 });
  });

  afterEach(() => {
    spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME: gnupgHome } });
  });

  function backUp(options: string[]): { db: string; artifact: string; repo: string; id: string; keyId: string | undefined } {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, ...options]).status, 0);
    const db = path.join(dir.path, 'app.db');
    buildRichDatabase(db, { rows: 300 });
    const backup = strata(['backup', db, '--repo', repo, '--json']);
    assert.equal(backup.status, 0, backup.stderr);
    const list = json<ListJson>(strata(['list', '--repo', repo, '--json']));
    return { db, repo, id: list.backups[0]!.id, artifact: path.join(repo, list.backups[0]!.key), keyId: list.backups[0]!.encryption.keyId };
  }

  /** Runs a documented block with bash and the person's own GnuPG home. */
  function follow(marker: string, variables: Record<string, string>): ReturnType<typeof spawnSync> & { stdout: string; stderr: string } {
    return spawnSync('bash', ['-euo', 'pipefail', '-c', recipe(marker)], { env: { ...process.env, GNUPGHOME: gnupgHome, ...variables }, encoding: 'utf8' });
  }

  /**
   * Key file first: the data key an artifact needs, in a file, by following docs/FORMAT.md
   * (recover-data-keys with the passphrase, then data-key-file).
   */
  function dataKeyFile(repo: string, keyId: string): string {
    const passfile = path.join(dir.path, 'passphrase');
    writeFileSync(passfile, TEST_PASSPHRASE, { mode: 0o600 });
    const keys = path.join(dir.path, 'keys.txt');
    const opened = follow('recover-data-keys', { REPO: repo, PASSFILE: passfile, KEYS: keys });
    assert.equal(opened.status, 0, opened.stderr);
    assert.deepEqual(opened.stdout.trim().split('\n'), [keyId], 'it prints the ids of the data keys the key file holds');
    const datakey = path.join(dir.path, 'datakey');
    const cut = follow('data-key-file', { KEYS: keys, KEYID: keyId, DATAKEY: datakey });
    assert.equal(cut.status, 0, cut.stderr);
    return datakey;
  }

  it('a full backup is recovered with gpg, zstd, tar and sqlite3 by following docs/FORMAT.md: key file first, then artifact', () => {
    const { db, artifact, repo, keyId } = backUp(['--compression', 'zstd']);
    assert.match(artifact, /\.tar\.zst\.gpg$/);
    assert.match(keyId ?? '', /^[0-9a-f]{8}$/, 'the catalog names the data key the artifact needs');
    const passfile = path.join(dir.path, 'passphrase');
    writeFileSync(passfile, TEST_PASSPHRASE, { mode: 0o600 });
    const withPassphrase = follow('recover-sqlite-full', { ARTIFACT: artifact, PASSFILE: passfile, OUT: path.join(dir.path, 'not-this-way') });
    assert.notEqual(withPassphrase.status, 0, 'the passphrase opens the key file, not the artifact');
    const out = path.join(dir.path, 'recovered');
    const run = follow('recover-sqlite-full', { ARTIFACT: artifact, PASSFILE: dataKeyFile(repo, keyId!), OUT: out });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout.trim(), 'ok', 'the recipe ends with PRAGMA integrity_check printing ok');
    const recovered = path.join(out, 'data/main.db');
    assert.equal(sqliteDump(recovered), sqliteDump(db));
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    const sha = spawnSync('sha256sum', [recovered], { encoding: 'utf8' }).stdout.split(' ')[0];
    assert.equal(sha, manifest.streams[0].sha256);
  });

  it('a gzip repository is recovered with gpg, gzip and tar', () => {
    const { db, artifact, repo, keyId } = backUp(['--compression', 'gzip']);
    assert.match(artifact, /\.tar\.gz\.gpg$/);
    const passfile = dataKeyFile(repo, keyId!);
    const out = path.join(dir.path, 'recovered');
    mkdirSync(out);
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', 'gpg --batch --pinentry-mode loopback --passphrase-file "$PASSFILE" --decrypt "$ARTIFACT" | gzip -d | tar -x -C "$OUT"'], {
      env: { ...process.env, GNUPGHOME: gnupgHome, ARTIFACT: artifact, PASSFILE: passfile, OUT: out },
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(sqliteDump(path.join(out, 'data/main.db')), sqliteDump(db));
  });

  it('an unencrypted schema-only backup is recovered with zstd, tar and sqlite3', () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    const db = path.join(dir.path, 'app.db');
    buildRichDatabase(db, { rows: 10 });
    assert.equal(strata(['backup', db, '--repo', repo, '--type', 'schema-only']).status, 0);
    const artifact = path.join(repo, json<ListJson>(strata(['list', '--repo', repo, '--json'])).backups[0]!.key);
    const out = path.join(dir.path, 'recovered');
    mkdirSync(out);
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', 'zstd -d < "$ARTIFACT" | tar -x -C "$OUT" && sqlite3 "$OUT/new.db" < "$OUT/schema.sql"'], {
      env: { ...process.env, ARTIFACT: artifact, OUT: out },
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(sqliteQuery(path.join(out, 'new.db'), '.schema'), sqliteQuery(db, '.schema'));
  });

  it('the modern (AEAD) profile round-trips through Strata; gpg 2.2 opens its key file but says it cannot read the artifact', () => {
    const { db, artifact, repo, id, keyId } = backUp(['--encryption', 'modern']);
    const target = path.join(dir.path, 'restored.db');
    const restore = strata(['restore', id, '--repo', repo, '--to', target]);
    assert.equal(restore.status, 0, restore.stderr);
    assert.equal(sqliteDump(target), sqliteDump(db));
    const passfile = dataKeyFile(repo, keyId!);
    const gpg = spawnSync('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase-file', passfile, '--decrypt', artifact], {
      env: { ...process.env, GNUPGHOME: gnupgHome },
    });
    assert.notEqual(gpg.status, 0, 'GnuPG 2.2 has no RFC 9580 AEAD; the docs promise gpg only for compat');
  });

  // openpgp.js is the largest module a strata process would load (packages/core/src/session-key-packet.ts):
  // a command of a compat repository reads and writes its packets without it. Blocked here as a
  // package a process cannot load, the compat commands must still work, and the modern profile's
  // artifacts, which only openpgp.js reads, must not (or the block proved nothing).
  /** The environment of a `strata` that cannot load openpgp.js. */
  function withoutOpenpgp(): { env: Record<string, string> } {
    const blocker = path.join(dir.path, 'block-openpgp.mjs');
    // By where it resolves to: the tests' bundle of the CLI imports it by its file, not by name.
    const hooks = `export async function resolve(specifier, context, next) {
      const resolved = await next(specifier, context);
      if (specifier === 'openpgp' || resolved.url.includes('/node_modules/openpgp/')) throw new Error('openpgp.js is blocked in this test');
      return resolved;
    }`;
    writeFileSync(blocker, `import { register } from 'node:module';\nregister(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});\n`);
    return { env: { NODE_OPTIONS: `--import=${pathToFileURL(blocker).href}` } };
  }

  it("a compat repository's commands run without openpgp.js; the modern profile's artifacts need it", () => {
    const blocked = withoutOpenpgp();

    const repo = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'app.db');
    buildRichDatabase(db, { rows: 300 });
    // Every command that writes a key file, then every kind that opens one.
    const bobFile = path.join(dir.path, 'bob-passphrase');
    const bobNewFile = path.join(dir.path, 'bob-new-passphrase');
    writeFileSync(bobFile, 'bob is blocked too', { mode: 0o600 });
    writeFileSync(bobNewFile, 'bob changed his', { mode: 0o600 });
    for (const args of [
      ['init', '--repo', repo],
      ['key', 'add', '--label', 'bob', '--new-passphrase-file', bobFile, '--repo', repo],
      ['key', 'rotate', '--also-passphrase-file', bobFile, '--repo', repo],
      ['key', 'passwd', '--passphrase-file', bobFile, '--new-passphrase-file', bobNewFile, '--repo', repo],
      ['backup', db, '--repo', repo],
      ['list', '--repo', repo],
      ['verify', 'latest', '--level', 'full', '--repo', repo],
      ['key', 'list', '--repo', repo],
    ]) {
      const run = strata(args, blocked);
      assert.equal(run.status, 0, `strata ${args.slice(0, 2).join(' ')}: ${run.stderr}`);
    }
    const asBob = strata(['verify', 'latest', '--repo', repo, '--passphrase-file', bobNewFile], blocked);
    assert.equal(asBob.status, 0, `the key file key passwd wrote for bob opens with his new passphrase: ${asBob.stderr}`);
    const target = path.join(dir.path, 'restored.db');
    const restore = strata(['restore', 'latest', '--repo', repo, '--to', target], blocked);
    assert.equal(restore.status, 0, restore.stderr);
    assert.equal(sqliteDump(target), sqliteDump(db));

    const modern = path.join(dir.path, 'modern');
    assert.equal(strata(['init', '--repo', modern, '--encryption', 'modern']).status, 0);
    assert.equal(strata(['backup', db, '--repo', modern]).status, 0);
    const keys = strata(['key', 'list', '--repo', modern], blocked);
    assert.equal(keys.status, 0, `its key file is of the compat shape: ${keys.stderr}`);
    const aead = strata(['restore', 'latest', '--repo', modern, '--to', path.join(dir.path, 'modern.db')], blocked);
    assert.notEqual(aead.status, 0);
    assert.match(aead.stderr, /openpgp\.js is blocked in this test/);
  });

  // A wrong passphrase opens a key file's session key packet into garbage whose first byte names a
  // cipher; 2 of the 256 values name another cipher of 32-byte keys, which only openpgp.js can
  // rule out. A command given the passphrase of a later key file meets that in 1 of 128 earlier
  // files, and must still open its own without openpgp.js; so must `key add`, which makes sure a
  // new passphrase opens no key file yet. The repository's first key file is sealed here again,
  // under a salt chosen for both: OpenPGP by hand, with a cheap S2K count.
  it('a passphrase that leaves an earlier key file undecided still opens its own, and a new one is taken, without openpgp.js', () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const bobFile = path.join(dir.path, 'bob-passphrase');
    writeFileSync(bobFile, 'bob, whose key file comes second', { mode: 0o600 });
    assert.equal(strata(['key', 'add', '--label', 'bob', '--new-passphrase-file', bobFile, '--repo', repo]).status, 0);
    const firstId = (JSON.parse(readFileSync(path.join(repo, 'repository.json'), 'utf8')) as { encryption: { keyFiles: { id: string }[] } }).encryption.keyFiles[0]!.id;
    const firstFile = path.join(repo, 'keys', `${firstId}.asc`);

    const packets = Buffer.from(
      readFileSync(firstFile, 'utf8')
        .split('\n')
        .filter((line) => line !== '' && !line.startsWith('-----') && !line.startsWith('='))
        .join(''),
      'base64',
    );
    // A new-format session key packet (tag 3) of one-octet length: version 4, AES-256, iterated
    // and salted S2K with SHA-256, 8 bytes of salt, the count, then the encrypted session key.
    assert.equal(packets[0], 0xc3);
    const body = packets.subarray(2, 2 + packets[1]!);
    const data = packets.subarray(2 + packets[1]!);
    assert.deepEqual([...body.subarray(0, 4)], [4, 9, 3, 8]);
    const zeroIv = Buffer.alloc(16);
    const sessionKey = createDecipheriv('aes-256-cfb', s2kSha256(TEST_PASSPHRASE, body.subarray(4, 12), body[12]!), zeroIv).update(body.subarray(13));
    assert.equal(sessionKey[0], 9, 'the session key is AES-256');
    const carolFile = path.join(dir.path, 'carol-passphrase');
    writeFileSync(carolFile, 'carol, who has no key file yet', { mode: 0o600 });
    const undecidedFor = [readFileSync(bobFile, 'utf8'), readFileSync(carolFile, 'utf8')];
    let sealed: Buffer | undefined;
    for (let tries = 0; !sealed; tries++) {
      assert.ok(tries < 10_000_000, 'a salt that leaves bob and carol undecided is found (1 in 16,384)');
      const salt = randomBytes(8);
      const encrypted = createCipheriv('aes-256-cfb', s2kSha256(TEST_PASSPHRASE, salt, 0), zeroIv).update(sessionKey);
      const undecided = (passphrase: string): boolean => [10, 13].includes(createDecipheriv('aes-256-cfb', s2kSha256(passphrase, salt, 0), zeroIv).update(encrypted)[0]!);
      if (undecidedFor.every(undecided)) sealed = Buffer.concat([Buffer.from([0xc3, 4 + 8 + 1 + encrypted.length, 4, 9, 3, 8]), salt, Buffer.from([0]), encrypted, data]);
    }
    const base64 = sealed.toString('base64').match(/.{1,60}/g)!;
    writeFileSync(firstFile, ['-----BEGIN PGP MESSAGE-----', '', ...base64, '-----END PGP MESSAGE-----', ''].join('\n'));

    const blocked = withoutOpenpgp();
    const asBob = strata(['key', 'list', '--repo', repo, '--passphrase-file', bobFile], blocked);
    assert.equal(asBob.status, 0, `bob's passphrase opens his key file: ${asBob.stderr}`);
    const asOwner = strata(['key', 'list', '--repo', repo], blocked);
    assert.equal(asOwner.status, 0, `the resealed first key file still opens with its own passphrase: ${asOwner.stderr}`);
    const carol = strata(['key', 'add', '--label', 'carol', '--new-passphrase-file', carolFile, '--repo', repo], blocked);
    assert.equal(carol.status, 0, `carol's new passphrase is taken: ${carol.stderr}`);
    const nobodyFile = path.join(dir.path, 'nobody-passphrase');
    writeFileSync(nobodyFile, 'opens neither key file', { mode: 0o600 });
    const nobody = strata(['key', 'passwd', '--repo', repo, '--passphrase-file', nobodyFile, '--new-passphrase-file', bobFile]);
    assert.equal(nobody.status, 4, `a passphrase of no key file is wrong: ${nobody.stderr}`);
  });

  it('an unencrypted, uncompressed artifact is a plain tar', () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption', '--compression', 'none']).status, 0);
    const db = path.join(dir.path, 'plain.db');
    copyFileSync(path.join(ROOT, 'fixtures/sample.db'), db);
    assert.equal(strata(['backup', db, '--repo', repo]).status, 0);
    const artifact = path.join(repo, json<ListJson>(strata(['list', '--repo', repo, '--json'])).backups[0]!.key);
    assert.match(artifact, /\.tar$/);
    const listing = spawnSync('tar', ['-tf', artifact], { encoding: 'utf8' });
    assert.equal(listing.status, 0);
    assert.deepEqual(listing.stdout.trim().split('\n'), ['README.txt', 'schema.sql', 'streams/main.db.json', 'data/main.db', 'layout/main.db.idx', 'manifest.json']);
  });
});
