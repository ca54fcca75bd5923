import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Passphrase, decryptStream, encryptStream, isStrataError, readTar, tarHeaderBytes, tarPadding, tarTrailer } from '@strata/sdk';
import { TEST_PASSPHRASE, useTempDir } from './helpers/env.js';

/**
 * The `compat` profile's data packet is framed by Strata itself (packages/core/src/seipd-stream.ts),
 * in parts of 1 MiB with partial body lengths: every message must open in GnuPG and in openpgp.js
 * whatever its length and however its plaintext arrived, and a changed or cut message must not.
 */
const MiB = 1024 * 1024;

async function* inPieces(bytes: Buffer, sizes: readonly number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (let n = 0; at < bytes.length; n++) {
    const size = sizes[n % sizes.length]!;
    yield bytes.subarray(at, at + size);
    at += size;
  }
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of source) parts.push(Buffer.from(part));
  return Buffer.concat(parts);
}

describe('OpenPGP messages of the compat profile', () => {
  const dir = useTempDir();
  const passphrase = new Passphrase(TEST_PASSPHRASE);

  function gpgDecrypt(message: Buffer): { status: number | null; stdout: Buffer; stderr: string } {
    const home = path.join(dir.path, `gnupg-${randomBytes(4).toString('hex')}`);
    mkdirSync(home, { mode: 0o700 });
    const file = path.join(dir.path, 'message.gpg');
    const passfile = path.join(dir.path, 'passphrase');
    writeFileSync(file, message);
    writeFileSync(passfile, TEST_PASSPHRASE, { mode: 0o600 });
    const r = spawnSync('gpg', ['--batch', '--quiet', '--homedir', home, '--pinentry-mode', 'loopback', '--passphrase-file', passfile, '--decrypt', file], { maxBuffer: 64 * MiB });
    spawnSync('gpgconf', ['--homedir', home, '--kill', 'all']);
    return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
  }

  /**
   * gpg writing `plain` with `gpg --symmetric` from a home of its own: `encrypt` takes the
   * passphrase and gpg's further options (cipher, S2K); `close` stops the home's agent.
   */
  function gpgWriter(name: string, plain: Buffer): { encrypt(secret: string, options: readonly string[]): Buffer; close(): void } {
    const home = path.join(dir.path, `gnupg-${name}`);
    mkdirSync(home, { mode: 0o700 });
    const input = path.join(dir.path, `${name}.bin`);
    const passfile = path.join(dir.path, `${name}.passphrase`);
    writeFileSync(input, plain);
    return {
      encrypt(secret, options) {
        writeFileSync(passfile, secret, { mode: 0o600 });
        const r = spawnSync('gpg', ['--batch', '--homedir', home, '--pinentry-mode', 'loopback', '--passphrase-file', passfile, '--symmetric', ...options, '-o', '-', input], { maxBuffer: 64 * MiB });
        assert.equal(r.status, 0, `gpg ${options.join(' ')}: ${r.stderr.toString()}`);
        return r.stdout;
      },
      close: () => void spawnSync('gpgconf', ['--homedir', home, '--kill', 'all']),
    };
  }

  // Around every boundary of the framing: empty, under the 512 bytes a first part needs, one part
  // exactly and a byte either side of it, for the literal packet and (53 bytes of headers, prefix
  // and MDC around the plaintext) for the encrypted packet, and several parts with a short tail.
  for (const size of [0, 1, 511, 512, MiB - 54, MiB - 53, MiB - 52, MiB - 7, MiB, MiB + 1, 3 * MiB + 77]) {
    it(`${size} bytes open in gpg and in Strata, byte for byte`, async () => {
      const plain = randomBytes(size);
      const message = await collect(encryptStream(inPieces(plain, [65_536 + 3, 1, 700_001, 4096]), passphrase, 'compat'));
      const gpg = gpgDecrypt(message);
      assert.equal(gpg.status, 0, gpg.stderr);
      assert.ok(gpg.stdout.equals(plain), 'gpg recovers the plaintext');
      assert.doesNotMatch(gpg.stderr, /WARNING/, 'gpg sees an integrity-protected message');
      assert.ok((await collect(decryptStream(inPieces(message, [1000]), passphrase))).equals(plain), 'Strata recovers the plaintext');
    });
  }

  it("a bit flipped anywhere in the data packet's framing, prefix, literal header or integrity code is refused", async function () {
    this.timeout(120_000);
    const plain = randomBytes(MiB + 5000);
    const message = await collect(encryptStream(inPieces(plain, [MiB / 4]), passphrase, 'compat'));
    // The session key packet comes first: new-format tag 3 and a one-octet length.
    const dataPacket = 2 + message[1]!;
    const positions = [...Array.from({ length: 48 }, (_, i) => dataPacket + i), ...Array.from({ length: 24 }, (_, i) => message.length - 1 - i)];
    for (const at of positions) {
      const flipped = Buffer.from(message);
      flipped[at]! ^= 1 << (at % 8);
      await assert.rejects(
        collect(decryptStream(inPieces(flipped, [4096]), passphrase)),
        (err: unknown) => isStrataError(err, 'PASSPHRASE_WRONG') || isStrataError(err, 'ARTIFACT_CORRUPT'),
        `a bit flipped at byte ${at} of ${message.length}`,
      );
    }
  });

  it('a reader that stops early lets the source go (a file handle, a connection)', async () => {
    const message = await collect(encryptStream(inPieces(randomBytes(3 * MiB), [MiB]), passphrase, 'compat'));
    for (const at of [0, MiB]) {
      let released = false;
      const source = (async function* () {
        try {
          yield* inPieces(message, [64 * 1024]);
        } finally {
          released = true;
        }
      })();
      let seen = 0;
      for await (const piece of decryptStream(source, passphrase)) {
        seen += piece.byteLength;
        if (seen > at) break;
      }
      assert.ok(released, `the source is closed after ${seen} bytes read`);
    }
  });

  it('a tar read from a message is read to the message\'s end: the integrity code in its last bytes is checked', async () => {
    // A tar that ends (its first zero block) well before the message does: the second zero block
    // and the integrity code come in a last piece of their own.
    const body = randomBytes(5000);
    const tar = Buffer.concat([tarHeaderBytes({ name: 'data/x', size: body.length, mtime: new Date() }), body, tarPadding(body.length), tarTrailer()]);
    const message = await collect(encryptStream(inPieces(tar, [tar.length]), passphrase, 'compat'));
    const cut = message.length - 600;
    const read = async (bytes: Buffer): Promise<{ names: string[]; consumed: number }> => {
      let consumed = 0;
      const source = (async function* () {
        for (const piece of [bytes.subarray(0, cut), bytes.subarray(cut)]) {
          consumed += piece.length;
          yield piece;
        }
      })();
      const names: string[] = [];
      for await (const entry of readTar(decryptStream(source, passphrase))) {
        names.push(entry.name);
        for await (const part of entry.body) void part;
      }
      return { names, consumed };
    };
    assert.deepEqual(await read(message), { names: ['data/x'], consumed: message.length });
    const altered = Buffer.from(message);
    altered[altered.length - 3]! ^= 0x40;
    await assert.rejects(read(altered), (err: unknown) => isStrataError(err, 'PASSPHRASE_WRONG'), 'the altered integrity code is noticed');
    // Anything but zeros after the end-of-archive marker is refused.
    const extended = await collect(encryptStream(inPieces(Buffer.concat([tar, Buffer.from('more')]), [4096]), passphrase, 'compat'));
    await assert.rejects(read(extended), (err: unknown) => isStrataError(err, 'ARTIFACT_CORRUPT'));
  });

  it('a wrong passphrase is told as such', async () => {
    const message = await collect(encryptStream(inPieces(randomBytes(100_000), [4096]), passphrase, 'compat'));
    await assert.rejects(collect(decryptStream(inPieces(message, [1000]), new Passphrase('not the passphrase'))), (err: unknown) => isStrataError(err, 'PASSPHRASE_WRONG'));
  });

  it("reads a message of another shape, gpg's own (compressed, old-format packets), through openpgp.js", async () => {
    const plain = randomBytes(3 * MiB);
    const gpg = gpgWriter('writer', plain);
    try {
      const message = gpg.encrypt(TEST_PASSPHRASE, ['--cipher-algo', 'AES256']);
      assert.ok((await collect(decryptStream(inPieces(message, [MiB]), passphrase))).equals(plain));
    } finally {
      gpg.close();
    }
  });

  it("a wrong passphrase on gpg's messages is told as such, at once", async function () {
    // A wrong key makes garbage of gpg's compressed packet, which openpgp.js read as a corrupt
    // message or waited on for ever (a quarter of the time, so forty messages all but always hit one).
    this.timeout(120_000);
    const gpg = gpgWriter('wrong', randomBytes(20_000));
    try {
      for (let n = 0; n < 40; n++) {
        const cipher = n % 2 === 0 ? 'AES256' : 'AES128';
        const message = gpg.encrypt(TEST_PASSPHRASE, ['--cipher-algo', cipher, '--s2k-count', '65536']);
        await assert.rejects(collect(decryptStream(inPieces(message, [MiB]), new Passphrase('not the passphrase'))), (err: unknown) => isStrataError(err, 'PASSPHRASE_WRONG'), `message ${n} (${cipher})`);
      }
    } finally {
      gpg.close();
    }
  });

  // Strata derives a passphrase's key itself (packages/core/src/s2k.ts), streamed, where openpgp.js
  // would build the whole iterated input in memory: the digests gpg can be told to use (RIPEMD-160,
  // which node:crypto may lack, and keys longer than one digest are left to openpgp.js), gpg's
  // smallest count and larger ones, both key sizes, passphrases in and out of ASCII must open what
  // gpg wrote, and only with it.
  it("opens gpg's messages under every S2K digest, count and key size, and not with a near-miss passphrase", async function () {
    this.timeout(120_000);
    const plain = randomBytes(70_000);
    const gpg = gpgWriter('s2k', plain);
    // Many repetitions of itself fewer than the others (gpg's secure memory holds ~32 KiB of passphrase).
    const long = `${'long passphrase '.repeat(125)}end`;
    const cases = [
      ['SHA256', 'AES256', 65_011_712, TEST_PASSPHRASE],
      ['SHA256', 'AES128', 65_536, TEST_PASSPHRASE],
      ['SHA1', 'AES256', 65_011_712, TEST_PASSPHRASE],
      ['SHA1', 'AES128', 2_097_152, 'pässwörd ✓ 鍵'],
      ['SHA224', 'AES256', 65_536, 'pässwörd ✓ 鍵'],
      ['SHA384', 'AES128', 65_536, long],
      ['SHA512', 'AES256', 65_011_712, long],
      ['SHA512', 'AES256', 3_145_728, 'x'],
      ['RIPEMD160', 'AES128', 65_536, TEST_PASSPHRASE],
    ] as const;
    try {
      for (const [digest, cipher, count, secret] of cases) {
        const what = `${digest}, ${cipher}, count ${count}, a passphrase of ${secret.length} characters`;
        const message = gpg.encrypt(secret, ['--cipher-algo', cipher, '--s2k-mode', '3', '--s2k-digest-algo', digest, '--s2k-count', String(count)]);
        // gpg's session key packet (old format, 2 header bytes: version, cipher, S2K type, digest, salt) then the count byte.
        const countByte = message[14]!;
        assert.equal((16 + (countByte & 15)) << ((countByte >> 4) + 6), count, `${what}: gpg wrote the count asked for`);
        assert.ok((await collect(decryptStream(inPieces(message, [MiB]), new Passphrase(secret)))).equals(plain), `${what}: opens`);
        await assert.rejects(
          collect(decryptStream(inPieces(message, [MiB]), new Passphrase(`${secret.slice(0, -1)}${secret.endsWith('x') ? 'y' : 'x'}`))),
          (err: unknown) => isStrataError(err, 'PASSPHRASE_WRONG'),
          `${what}: the passphrase with its last character changed does not open it`,
        );
      }
    } finally {
      gpg.close();
    }
  });

  it('opens a message whose S2K count is smaller than its salt and passphrase, which are then hashed once whole', async () => {
    // gpg writes no count under 65,536, so the message is one of Strata's with its session key
    // packet rewritten by hand (RFC 4880 5.3, 3.7.1.3): the smallest count byte (1,024 bytes) and
    // the session key encrypted again under the key that count gives, computed here the plain way.
    const secret = `${'a passphrase longer than the count '.repeat(60)}!`;
    const plain = randomBytes(50_000);
    const message = await collect(encryptStream(inPieces(plain, [4096]), new Passphrase(secret), 'compat'));
    assert.deepEqual([...message.subarray(0, 6)], [0xc3, 46, 4, 9, 3, 8], 'a session key packet of AES-256 under an iterated and salted SHA-256 S2K, then 46 bytes long');
    const salt = message.subarray(6, 14);
    const s2k = (countByte: number): Buffer => {
      const unit = Buffer.concat([salt, Buffer.from(secret, 'utf8')]);
      const count = Math.max((16 + (countByte & 15)) << ((countByte >> 4) + 6), unit.length);
      const input = Buffer.alloc(count);
      for (let at = 0; at < count; at += unit.length) unit.copy(input, at);
      return createHash('sha256').update(input).digest();
    };
    const cfb = (key: Buffer, bytes: Buffer, encrypt: boolean): Buffer => {
      const cipher = (encrypt ? createCipheriv : createDecipheriv)('aes-256-cfb', key, Buffer.alloc(16));
      return Buffer.concat([cipher.update(bytes), cipher.final()]);
    };
    const sessionKey = cfb(s2k(message[14]!), message.subarray(15, 48), false);
    assert.equal(sessionKey[0], 9, 'the packet holds an AES-256 session key');
    const rewritten = Buffer.concat([message.subarray(0, 14), Buffer.from([0]), cfb(s2k(0), sessionKey, true), message.subarray(48)]);
    assert.ok((await collect(decryptStream(inPieces(rewritten, [MiB]), new Passphrase(secret)))).equals(plain));
  });

  it('opens a session key packet that holds no encrypted key (the passphrase\'s key is the session key), as gpg does', async () => {
    // Strata's session key packet (packages/core/src/session-key-packet.ts) always holds an
    // encrypted session key; RFC 9580 5.3 also lets the passphrase's key be the session key, which
    // is how gpg writes a message for one passphrase. Made here from one of Strata's: the packet
    // without its encrypted key, and the data packet's ciphertext encrypted again under the
    // passphrase's key (CFB: the same length, the integrity code unchanged).
    const plain = randomBytes(60_000);
    const message = await collect(encryptStream(inPieces(plain, [4096]), passphrase, 'compat'));
    assert.deepEqual([...message.subarray(0, 6)], [0xc3, 46, 4, 9, 3, 8]);
    const salt = message.subarray(6, 14);
    const countByte = message[14]!;
    const unit = Buffer.concat([salt, Buffer.from(TEST_PASSPHRASE, 'utf8')]);
    const count = (16 + (countByte & 15)) << ((countByte >> 4) + 6);
    const s2kInput = Buffer.alloc(count);
    for (let at = 0; at < count; at += unit.length) unit.copy(s2kInput, at);
    const passphraseKey = createHash('sha256').update(s2kInput).digest();
    const opened = createDecipheriv('aes-256-cfb', passphraseKey, Buffer.alloc(16)).update(message.subarray(15, 48));
    // The data packet: its tag, a five-octet length (under one part, so one definite length), the version, then ciphertext.
    assert.deepEqual([message[48], message[49], message[54]], [0xc0 | 18, 0xff, 1], 'one encrypted data packet of definite length');
    assert.equal(message.readUInt32BE(50), message.length - 54);
    const inner = createDecipheriv('aes-256-cfb', opened.subarray(1), Buffer.alloc(16)).update(message.subarray(55));
    const again = createCipheriv('aes-256-cfb', passphraseKey, Buffer.alloc(16)).update(inner);
    const rewritten = Buffer.concat([Buffer.from([0xc3, 13]), message.subarray(2, 15), message.subarray(48, 55), again]);
    const gpg = gpgDecrypt(rewritten);
    assert.equal(gpg.status, 0, gpg.stderr);
    assert.ok(gpg.stdout.equals(plain), 'gpg opens the rewritten message');
    assert.ok((await collect(decryptStream(inPieces(rewritten, [1000]), passphrase))).equals(plain), 'so does Strata');
    await assert.rejects(collect(decryptStream(inPieces(rewritten, [1000]), new Passphrase('not the passphrase'))), (err: unknown) => isStrataError(err, 'PASSPHRASE_WRONG'));
  });

  it('a changed byte or a cut message fails in gpg and in Strata', async () => {
    const plain = randomBytes(2 * MiB + 300);
    const message = await collect(encryptStream(inPieces(plain, [MiB / 2]), passphrase, 'compat'));
    const changed = Buffer.from(message);
    changed[Math.floor(changed.length * 0.6)]! ^= 0x01;
    const cut = message.subarray(0, message.length - 30);
    for (const [what, bad] of [['changed', changed], ['cut', cut]] as const) {
      assert.notEqual(gpgDecrypt(bad).status, 0, `gpg refuses the ${what} message`);
      await assert.rejects(
        collect(decryptStream(inPieces(bad, [MiB]), passphrase)),
        (err: unknown) => isStrataError(err, 'PASSPHRASE_WRONG') || isStrataError(err, 'ARTIFACT_CORRUPT'),
        `Strata refuses the ${what} message`,
      );
    }
  });
});
