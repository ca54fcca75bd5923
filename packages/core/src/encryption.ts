import { createDecipheriv, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeWebReadableStream } from 'node:stream/web';
import type * as OpenPgp from 'openpgp';
import { StrataError } from './errors.js';
import { streamIteratedS2kOf } from './s2k.js';
import { openSeipdV1, seipdV1, seipdV1Head, seipdV1Start } from './seipd-stream.js';
import { STRETCHED_S2K_COUNT_BYTE, UNSTRETCHED_S2K_COUNT_BYTE, armorDamage, armorMessage, dearmorMessage, openSessionKeyPacket, writeSessionKeyPacket } from './session-key-packet.js';

/**
 * - `compat` (default): OpenPGP SEIPDv1 (AES-256, MDC) with an iterated-salted S2K, what
 *   `gpg --decrypt` (GnuPG 2.2 and later) opens.
 * - `modern`: RFC 9580 AEAD (SEIPDv2, AES-256-GCM): each chunk is authenticated, and it is faster,
 *   but GnuPG cannot read it; openpgp.js, Sequoia and rPGP can.
 * - `none`: no encryption, only when asked for explicitly at `init`.
 */
export type EncryptionProfile = 'compat' | 'modern' | 'none';

/**
 * A passphrase held so it never lands in a string that gets logged by accident: `toString()` and
 * JSON show a placeholder, and only {@link Passphrase.reveal} gives the text to openpgp.
 */
export class Passphrase {
  readonly #value: string;

  constructor(value: string) {
    if (value.length === 0) throw new StrataError('USAGE', 'passphrase: an empty passphrase is not allowed');
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  toString(): string {
    return '[passphrase]';
  }

  toJSON(): string {
    return '[passphrase]';
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return 'Passphrase [hidden]';
  }
}

/** What newDataKey writes: 32 random bytes as base64url. */
const GENERATED_KEY_SHAPE = /^[A-Za-z0-9_-]{43}$/;

/**
 * A data key Strata generated itself (origins init, rotate, migrate): 256 random bits. Key
 * stretching exists to make guessing a human passphrase slow; nobody guesses 2^256 keys, so
 * messages under such a key use the cheapest iterated-salted S2K (1,024 bytes hashed instead of
 * openpgp.js's 16 MiB, about 0.5 ms instead of 70 ms per message, paid at every encrypt and
 * decrypt: every artifact, layout cache and facts cache). Everything a person's passphrase
 * protects keeps the strong default: key files and key checks ({@link encryptSmall}), artifacts of
 * a repository from before key files, and anything under a `legacy` or `import` data key (which
 * can be such a passphrase). docs/FORMAT.md, "Artifact layers", says the same.
 */
export class GeneratedKey extends Passphrase {
  constructor(value: string) {
    // The origin comes from repository.json, which nothing authenticates: the shape check keeps
    // a hand-edited origin from getting a person's passphrase used without stretching.
    if (!GENERATED_KEY_SHAPE.test(value)) throw new StrataError('INTERNAL', 'data key: not the shape of a key Strata generates');
    super(value);
  }

  /** True when `value` could be a key Strata generated (it still needs the right origin). */
  static fits(value: string): boolean {
    return GENERATED_KEY_SHAPE.test(value);
  }
}

function profileConfig(openpgp: typeof OpenPgp, profile: Exclude<EncryptionProfile, 'none'>, options: { stretch: boolean }): Partial<OpenPgp.Config> {
  const common = {
    preferredSymmetricAlgorithm: openpgp.enums.symmetric.aes256,
    // The payload is already compressed; OpenPGP compression would only cost time.
    preferredCompressionAlgorithm: openpgp.enums.compression.uncompressed,
    // Both profiles use the iterated-salted S2K (openpgp.js's default s2kType; never argon2).
    ...(options.stretch ? {} : { s2kIterationCountByte: UNSTRETCHED_S2K_COUNT_BYTE }),
  };
  if (profile === 'compat') return { ...common, aeadProtect: false };
  return { ...common, aeadProtect: true, preferredAEADAlgorithm: openpgp.enums.aead.gcm };
}

/**
 * openpgp.js, loaded only where a message is not of the `compat` profile's own shape (the
 * `modern` profile's, another program's), where this profile's session key packet opened with the
 * passphrase names another cipher: it is the largest module a strata process loads (see
 * session-key-packet.ts).
 */
let openpgpModule: Promise<typeof OpenPgp> | undefined;
function loadOpenpgp(): Promise<typeof OpenPgp> {
  return (openpgpModule ??= import('openpgp'));
}

type WebBytes = ReadableStream<Uint8Array>;

function toWeb(source: AsyncIterable<Uint8Array>): WebBytes {
  return Readable.toWeb(Readable.from(source, { objectMode: false })) as unknown as WebBytes;
}

/**
 * Encrypts a byte stream with the passphrase; memory stays flat. In the `compat` profile the
 * session key packet is {@link writeSessionKeyPacket}'s and the data packet is streamed by
 * {@link seipdV1}, which costs a backup a fraction of openpgp.js's streams; `modern` is
 * openpgp.js's throughout.
 */
export async function* encryptStream(source: AsyncIterable<Uint8Array>, passphrase: Passphrase, profile: Exclude<EncryptionProfile, 'none'>): AsyncGenerator<Uint8Array> {
  if (profile === 'compat') {
    const sessionKey = randomBytes(32);
    yield writeSessionKeyPacket(passphrase.reveal(), sessionKey, passphrase instanceof GeneratedKey ? UNSTRETCHED_S2K_COUNT_BYTE : STRETCHED_S2K_COUNT_BYTE);
    yield* seipdV1(source, sessionKey);
    return;
  }
  const openpgp = await loadOpenpgp();
  const message = await openpgp.createMessage({ binary: toWeb(source) });
  const encrypted = (await openpgp.encrypt({
    message,
    passwords: [passphrase.reveal()],
    format: 'binary',
    config: profileConfig(openpgp, profile, { stretch: !(passphrase instanceof GeneratedKey) }),
  })) as unknown as NodeWebReadableStream<Uint8Array>;
  yield* encrypted as AsyncIterable<Uint8Array>;
}

/** Octets of a message's start that always hold its session key packets and the start of the data packet after them. */
const MESSAGE_HEAD_BYTES = 4096;

/**
 * Decrypts a byte stream. Plaintext flows before the message's integrity check at its very end
 * has run (for SEIPDv1 the MDC, for AEAD the final tag), so callers must treat what they receive
 * as unverified until the iterator finishes without error, and only then commit anything.
 *
 * A message that starts as the `compat` profile writes it (version 4 session key packets, then a
 * version 1 SEIPD packet, under AES-256) has its session key opened by {@link openSessionKeyPacket}
 * (or by openpgp.js, for session key packets of another shape) and its data read by
 * {@link openSeipdV1}, which expects a literal data packet inside, as Strata and openpgp.js write
 * it; a message that starts otherwise (the `modern` profile's, gpg's own) is read by openpgp.js
 * whole.
 */
export async function* decryptStream(source: AsyncIterable<Uint8Array>, passphrase: Passphrase): AsyncGenerator<Uint8Array> {
  const iterator = source[Symbol.asyncIterator]();
  const pieces: Buffer[] = [];
  let headBytes = 0;
  let ended = false;
  try {
    while (headBytes < MESSAGE_HEAD_BYTES) {
      const next = await iterator.next();
      if (next.done) {
        ended = true;
        break;
      }
      pieces.push(Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength));
      headBytes += next.value.byteLength;
    }
  } catch (err) {
    // The source's own failure (a storage error), as it is: nothing here read it as a message yet.
    await iterator.return?.().catch(() => undefined);
    throw err;
  }
  const head = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
  const rest: AsyncIterator<Uint8Array> = ended ? { next: async () => ({ done: true, value: undefined }) } : iterator;
  try {
    const shape = seipdV1Head(head);
    if (shape) {
      const sessionKey = await openSessionKey(shape.sessionKeyPackets, passphrase);
      if (sessionKey) {
        yield* openSeipdV1(shape.dataPacket, rest, sessionKey);
        return;
      }
    }
    const sessionKeys = await checkedSessionKeys(head, passphrase);
    yield* decryptWithOpenpgp(
      (async function* () {
        yield head;
        for (let next = await rest.next(); !next.done; next = await rest.next()) yield next.value;
      })(),
      sessionKeys ? { sessionKeys } : { passwords: [passphrase.reveal()] },
    );
  } finally {
    // A reader that stops early (or fails) lets the source go: a file's handle, an object's connection.
    if (!ended) await iterator.return?.().catch(() => undefined);
  }
}

/** The AES-256 session key that `passphrase` opens in the packets, or undefined for another cipher (openpgp.js reads those messages whole). */
async function openSessionKey(packets: Buffer, passphrase: Passphrase): Promise<Uint8Array | undefined> {
  const own = openSessionKeyPacket(packets, passphrase.reveal());
  if (own === 'wrong') throw new StrataError('PASSPHRASE_WRONG', 'decrypt: the passphrase does not decrypt this data, or the data was altered (its session key packet does not open)');
  if (own) return own;
  const openpgp = await loadOpenpgp();
  let keys: { data: Uint8Array; algorithm: string | null }[];
  try {
    const message = await openpgp.readMessage({ binaryMessage: packets });
    streamIteratedS2kOf(openpgp, message);
    keys = await settleWithin(openpgp.decryptSessionKeys({ message, passwords: [passphrase.reveal()] }));
  } catch (err) {
    throw classifyDecryptError(err);
  }
  const key = keys.find((k) => k.algorithm === 'aes256' && k.data.length === 32);
  return key?.data;
}

type SessionKey = { data: Uint8Array; algorithm: OpenPgp.enums.symmetricNames };

/** node:crypto's CFB ciphers for the session key algorithms a quick check is made for. */
const CFB_CIPHERS: ReadonlyMap<string, { name: string; keyBytes: number }> = new Map([
  ['aes128', { name: 'aes-128-cfb', keyBytes: 16 }],
  ['aes192', { name: 'aes-192-cfb', keyBytes: 24 }],
  ['aes256', { name: 'aes-256-cfb', keyBytes: 32 }],
  ['camellia128', { name: 'camellia-128-cfb', keyBytes: 16 }],
  ['camellia192', { name: 'camellia-192-cfb', keyBytes: 24 }],
  ['camellia256', { name: 'camellia-256-cfb', keyBytes: 32 }],
]);

/**
 * The session keys `passphrase` opens in a SEIPDv1 message of any packet format (gpg's own, for
 * one) that pass OpenPGP's quick check (the prefix's last block ends in two
 * octets it repeats), or undefined when the message is of another shape or a cipher not checked
 * here (openpgp.js then decides with the passphrase). Throws PASSPHRASE_WRONG when no key passes.
 *
 * Why: openpgp.js does not make this check, so a wrong passphrase reaches its packet parser as
 * garbage, which it may take for a packet of indeterminate length and then wait on forever (a
 * quarter of the wrong passphrases on gpg's messages here) or report as a corrupt message. gpg
 * makes the check; a wrong key passes it 1 time in 65,536, and the integrity code still fails it.
 */
async function checkedSessionKeys(message: Buffer, passphrase: Passphrase): Promise<SessionKey[] | undefined> {
  const start = seipdV1Start(message);
  if (!start) return undefined;
  const openpgp = await loadOpenpgp();
  let keys: SessionKey[];
  try {
    const packets = await openpgp.readMessage({ binaryMessage: start.sessionKeyPackets });
    streamIteratedS2kOf(openpgp, packets);
    keys = (await settleWithin(openpgp.decryptSessionKeys({ message: packets, passwords: [passphrase.reveal()] }))) as SessionKey[];
  } catch (err) {
    throw classifyDecryptError(err);
  }
  const passing: SessionKey[] = [];
  for (const key of keys) {
    const cipher = CFB_CIPHERS.get(key.algorithm);
    if (!cipher) return undefined;
    // A session key packet opened with the wrong passphrase can name a cipher its key does not fit.
    if (key.data.length !== cipher.keyBytes) continue;
    const prefix = createDecipheriv(cipher.name, key.data, Buffer.alloc(16)).update(start.encryptedStart);
    if (prefix[16] === prefix[14] && prefix[17] === prefix[15]) passing.push(key);
  }
  if (passing.length === 0) throw new StrataError('PASSPHRASE_WRONG', 'decrypt: the passphrase does not decrypt this data, or the data was altered (its session key does not open it)');
  return passing;
}

/** A message read by openpgp.js, with the session keys that open it or the passphrase. */
async function* decryptWithOpenpgp(source: AsyncIterable<Uint8Array>, opener: { sessionKeys: SessionKey[] } | { passwords: string[] }): AsyncGenerator<Uint8Array> {
  const openpgp = await loadOpenpgp();
  let data: AsyncIterable<Uint8Array>;
  try {
    const message = await openpgp.readMessage({ binaryMessage: toWeb(source) });
    streamIteratedS2kOf(openpgp, message);
    const result = await settleWithin(
      openpgp.decrypt({
        message,
        ...opener,
        format: 'binary',
        // Without this openpgp.js buffers the whole plaintext (3x the database in RAM) until the
        // MDC checks out; our callers write to temporary files and commit only on success instead.
        config: { allowUnauthenticatedStream: true },
      }),
    );
    data = result.data as unknown as AsyncIterable<Uint8Array>;
  } catch (err) {
    throw classifyDecryptError(err);
  }
  try {
    yield* data;
  } catch (err) {
    throw classifyDecryptError(err);
  }
}

/** How long openpgp may take to parse a message's headers before we call it undecryptable. */
const HEADER_TIMEOUT_MS = 30_000;

/**
 * openpgp.js can wait forever when a key turns the first packet into garbage that declares an
 * indeterminate length: a wrong key the quick check missed (1 in 65,536) or could not make (a
 * cipher node:crypto lacks, which a wrong passphrase can make an encrypted session key name), or
 * altered data.
 * Headers parse in milliseconds otherwise, so a generous timeout turns that hang into an error.
 * The timer holds the process open: the wait is on nothing (no I/O pending), so without it a
 * command would end there with no error said.
 */
async function settleWithin<T>(promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('decryption made no progress (wrong passphrase or not an OpenPGP message)')), HEADER_TIMEOUT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Maps openpgp's error messages onto our codes. */
export function classifyDecryptError(err: unknown): StrataError {
  if (err instanceof StrataError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/password|passphrase|session key|Modification detected|authenticate data|tag mismatch|decryption failed|no progress/i.test(message)) {
    // A wrong passphrase and tampered ciphertext look the same to OpenPGP at this point; callers
    // that already checked the passphrase against the repository's key check report tampering.
    return new StrataError('PASSPHRASE_WRONG', `decrypt: the passphrase does not decrypt this data, or the data was altered (${message})`, { cause: err });
  }
  return new StrataError('ARTIFACT_CORRUPT', `decrypt: not a readable OpenPGP message (${message})`, { cause: err });
}

/**
 * Encrypts a small value in memory (a key file, or the key check of a repository from before key
 * files). Always under a person's passphrase, so always with the strong default S2K.
 */
export async function encryptSmall(plain: Uint8Array, passphrase: Passphrase, profile: Exclude<EncryptionProfile, 'none'>): Promise<string> {
  if (profile === 'compat') {
    const sessionKey = randomBytes(32);
    const packets = [writeSessionKeyPacket(passphrase.reveal(), sessionKey, STRETCHED_S2K_COUNT_BYTE)];
    for await (const piece of seipdV1((async function* () { yield plain; })(), sessionKey)) packets.push(piece);
    return armorMessage(Buffer.concat(packets));
  }
  const openpgp = await loadOpenpgp();
  const message = await openpgp.createMessage({ binary: plain });
  return (await openpgp.encrypt({ message, passwords: [passphrase.reveal()], format: 'armored', config: profileConfig(openpgp, profile, { stretch: true }) })) as string;
}

/** Decrypts a small value encrypted by {@link encryptSmall}; PASSPHRASE_WRONG (naming `what`) when it does not open. */
export async function decryptSmall(armored: string, passphrase: Passphrase, what = 'the repository key check'): Promise<Uint8Array> {
  const wrong = (cause: unknown): StrataError => new StrataError('PASSPHRASE_WRONG', `repository: wrong passphrase (it does not open ${what})`, { cause });
  const own = await openSmallHere(armored, passphrase);
  if (own instanceof StrataError) throw wrong(own);
  if (own) return own;
  const openpgp = await loadOpenpgp();
  try {
    const message = await openpgp.readMessage({ armoredMessage: armored });
    streamIteratedS2kOf(openpgp, message);
    // Non-streaming, so the MDC is checked before anything is returned: a wrong passphrase that
    // slips past the session-key check (about 1 in 140 for SEIPDv1) still fails here.
    const { data } = await settleWithin(openpgp.decrypt({ message, passwords: [passphrase.reveal()], format: 'binary' }));
    return data as Uint8Array;
  } catch (err) {
    throw wrong(classifyDecryptError(err));
  }
}

/**
 * What makes a small armored message unreadable whatever the passphrase (cut short, a character
 * changed), or undefined when it reads as an OpenPGP message. openpgp.js is loaded only for a
 * body this module's reader does not take.
 */
export async function messageDamage(armored: string): Promise<string | undefined> {
  const damage = armorDamage(armored);
  if (damage !== undefined || dearmorMessage(armored)) return damage;
  const openpgp = await loadOpenpgp();
  try {
    await openpgp.readMessage({ armoredMessage: armored });
    return undefined;
  } catch (err) {
    return `it is not a readable OpenPGP message: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/**
 * {@link decryptSmall} without openpgp.js: the plaintext, `'wrong'` when the passphrase does not
 * open it, or undefined when only openpgp.js can tell (a message of another shape, or one whose
 * session key packet a wrong passphrase turned into another cipher's, about 1 time in 128).
 */
export async function decryptSmallHere(armored: string, passphrase: Passphrase): Promise<Uint8Array | 'wrong' | undefined> {
  const own = await openSmallHere(armored, passphrase);
  return own instanceof StrataError ? 'wrong' : own;
}

/**
 * A small message of the `compat` profile opened without openpgp.js (see session-key-packet.ts):
 * its plaintext, read whole and returned only after the modification detection code checked out;
 * the error when the passphrase does not open it; undefined when it is of another shape, which
 * openpgp.js then reads.
 */
async function openSmallHere(armored: string, passphrase: Passphrase): Promise<Uint8Array | StrataError | undefined> {
  const message = dearmorMessage(armored);
  const shape = message && seipdV1Head(message);
  const sessionKey = shape && openSessionKeyPacket(shape.sessionKeyPackets, passphrase.reveal());
  if (sessionKey === 'wrong') return new StrataError('PASSPHRASE_WRONG', 'decrypt: its session key packet does not open');
  if (!shape || !sessionKey) return undefined;
  const ended: AsyncIterator<Uint8Array> = { next: async () => ({ done: true, value: undefined }) };
  const pieces: Buffer[] = [];
  try {
    for await (const piece of openSeipdV1(shape.dataPacket, ended, sessionKey)) pieces.push(piece);
  } catch (err) {
    // Not shaped as this reader expects inside (ARTIFACT_CORRUPT): openpgp.js has the last word.
    if (err instanceof StrataError && err.code === 'PASSPHRASE_WRONG') return err;
    return undefined;
  }
  return Buffer.concat(pieces);
}
