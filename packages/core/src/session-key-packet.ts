import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { iteratedS2k } from './s2k.js';

/**
 * The session key packet of the `compat` profile, written and read here: one version 4
 * Symmetric-Key Encrypted Session Key packet (RFC 9580 5.3) that holds an AES-256 session key
 * encrypted under the passphrase's iterated and salted S2K (SHA-256). Also the ASCII armor of a
 * key file, written and read here.
 *
 * Why by hand: openpgp.js is the largest module a strata process loads (1.2 MB of source), and
 * loading it cost every command that opens a key file or an artifact 70–110 ms of CPU, a fifth of
 * what a short command spends (a `wal-push` or `wal-fetch` per log file, a `verify`), only to
 * write or open this packet of 48 octets; the data packet after it is framed in seipd-stream.ts
 * already. The key derivation and the cipher are node:crypto's (s2k.ts). What is read here is the
 * shape written here (also what openpgp.js writes in this profile), with the variations RFC 9580
 * allows it that cost nothing to read: no encrypted key, another S2K digest, any count. A packet
 * or armor of any other shape gives undefined, and the caller has openpgp.js read the message as
 * before.
 */

/** New-format packet tag of a Symmetric-Key Encrypted Session Key packet (0xC0 | 3). */
const TAG_SESSION_KEY = 0xc0 | 3;
const PACKET_VERSION = 4;
/** OpenPGP's identifiers (RFC 9580 9.3, 3.7.1, 9.5): AES-256, the iterated and salted S2K, SHA-256. */
const ALGORITHM_AES256 = 9;
/** The other ciphers of 32-byte keys (Twofish, Camellia-256): an encrypted session key may name them. */
const OTHER_32_BYTE_KEY_ALGORITHMS: ReadonlySet<number> = new Set([10, 13]);
const S2K_ITERATED = 3;
const HASH_SHA256 = 8;
const SALT_BYTES = 8;
const KEY_BYTES = 32;
const AES_BLOCK = 16;
/** Version, cipher, S2K type, hash, salt and count: the body before the encrypted session key. */
const FIXED_BODY_BYTES = 4 + SALT_BYTES + 1;
/** The encrypted session key: its cipher's identifier, then the key. */
const ENCRYPTED_KEY_BYTES = 1 + KEY_BYTES;

/**
 * The S2K count byte for a person's passphrase: 224, 16 MiB hashed, what openpgp.js writes by
 * default and wrote in this profile before this module. A generated data key needs no stretching
 * (encryption.ts, GeneratedKey) and gets 0, 1,024 bytes, the least OpenPGP allows.
 */
export const STRETCHED_S2K_COUNT_BYTE = 224;
export const UNSTRETCHED_S2K_COUNT_BYTE = 0;

/** The octets a count byte stands for (RFC 9580 3.7.1.3). */
function s2kCount(countByte: number): number {
  return (16 + (countByte & 15)) << ((countByte >> 4) + 6);
}

/** The session key packet that opens `sessionKey` (32 bytes, AES-256) with `passphrase`. */
export function writeSessionKeyPacket(passphrase: string, sessionKey: Uint8Array, countByte: number): Buffer {
  if (sessionKey.length !== KEY_BYTES) throw new Error(`session key packet: a key of ${sessionKey.length} bytes, not ${KEY_BYTES}`);
  if (!Number.isInteger(countByte) || countByte < 0 || countByte > 255) throw new Error(`session key packet: S2K count byte ${countByte} is not an octet`);
  const salt = randomBytes(SALT_BYTES);
  const passphraseKey = iteratedS2k(HASH_SHA256, salt, s2kCount(countByte), passphrase, KEY_BYTES)!;
  // CFB with a zero IV and no resynchronisation, as RFC 9580 5.3 has version 4 encrypt the key.
  const cipher = createCipheriv('aes-256-cfb', passphraseKey, Buffer.alloc(AES_BLOCK));
  const encryptedKey = Buffer.concat([cipher.update(Buffer.concat([Buffer.from([ALGORITHM_AES256]), sessionKey])), cipher.final()]);
  const body = Buffer.concat([Buffer.from([PACKET_VERSION, ALGORITHM_AES256, S2K_ITERATED, HASH_SHA256]), salt, Buffer.from([countByte]), encryptedKey]);
  return Buffer.concat([Buffer.from([TAG_SESSION_KEY, body.length]), body]);
}

/**
 * The AES-256 session key that `passphrase` opens in `packets`, which must be exactly one session
 * key packet of the shape written above (its encrypted key may also be absent, as GnuPG writes
 * it: the passphrase's key is then the session key). 'wrong' when what the passphrase opens names
 * no cipher of a 32-byte key at all, which only a wrong passphrase (or a changed packet) makes;
 * undefined for any other shape, and for another cipher of a 32-byte key (openpgp.js then reads
 * the message, as it did before this module). A wrong passphrase that names AES-256 by chance
 * (1 time in 256) fails the data packet's quick check instead.
 */
export function openSessionKeyPacket(packets: Buffer, passphrase: string): Buffer | 'wrong' | undefined {
  if (packets.length < 2 || packets[0] !== TAG_SESSION_KEY || packets[1]! >= 192 || packets.length !== 2 + packets[1]!) return undefined;
  const body = packets.subarray(2);
  const keyBytes = body.length - FIXED_BODY_BYTES;
  if (keyBytes !== 0 && keyBytes !== ENCRYPTED_KEY_BYTES) return undefined;
  if (body[0] !== PACKET_VERSION || body[1] !== ALGORITHM_AES256 || body[2] !== S2K_ITERATED) return undefined;
  const salt = body.subarray(4, 4 + SALT_BYTES);
  const passphraseKey = iteratedS2k(body[3]!, salt, s2kCount(body[4 + SALT_BYTES]!), passphrase, KEY_BYTES);
  if (!passphraseKey) return undefined;
  if (keyBytes === 0) return Buffer.from(passphraseKey);
  const decipher = createDecipheriv('aes-256-cfb', passphraseKey, Buffer.alloc(AES_BLOCK));
  const opened = Buffer.concat([decipher.update(body.subarray(FIXED_BODY_BYTES)), decipher.final()]);
  if (opened[0] === ALGORITHM_AES256) return opened.subarray(1);
  return OTHER_32_BYTE_KEY_ALGORITHMS.has(opened[0]!) ? undefined : 'wrong';
}

const ARMOR_BEGIN = '-----BEGIN PGP MESSAGE-----';
const ARMOR_END = '-----END PGP MESSAGE-----';
const BASE64_LINE = /^[A-Za-z0-9+/]*={0,2}$/;
/** Base64 characters per armor line: openpgp.js's width, within the 76 the format allows. */
const ARMOR_LINE_CHARS = 60;

/**
 * `packets` as an ASCII-armored message, as openpgp.js armored the key files before this module:
 * no armor headers, lines of 60, and the CRC-24 checksum line, which GnuPG 2.2 still expects.
 */
export function armorMessage(packets: Uint8Array): string {
  const base64 = Buffer.from(packets).toString('base64');
  const lines: string[] = [];
  for (let at = 0; at < base64.length; at += ARMOR_LINE_CHARS) lines.push(base64.slice(at, at + ARMOR_LINE_CHARS));
  const crc = armorChecksum(packets);
  const checksum = Buffer.from([crc >> 16, (crc >> 8) & 0xff, crc & 0xff]).toString('base64');
  return `${ARMOR_BEGIN}\n\n${lines.join('\n')}\n=${checksum}\n${ARMOR_END}\n`;
}

/** The armor's CRC-24 (RFC 9580 6.1.1). */
function armorChecksum(bytes: Uint8Array): number {
  let crc = 0xb704ce;
  for (const byte of bytes) {
    crc ^= byte << 16;
    for (let bit = 0; bit < 8; bit++) {
      crc <<= 1;
      if (crc & 0x1000000) crc ^= 0x1864cfb;
    }
  }
  return crc & 0xffffff;
}

/**
 * The bytes of an ASCII-armored message (RFC 9580 6.2), or undefined when the text is not one
 * armored message as openpgp.js and GnuPG write it. Its armor checksum (a CRC-24, optional since
 * RFC 9580) is not checked: the data packet's modification detection code, checked whenever the
 * message is opened, catches every change a checksum would and more.
 */
export function dearmorMessage(text: string): Buffer | undefined {
  const lines = text.split('\n').map(withoutTrailingSpace);
  let at = lines.findIndex((line) => line.length > 0);
  if (at < 0 || lines[at] !== ARMOR_BEGIN) return undefined;
  at++;
  // Armor headers (`Comment: ...`) up to an empty line.
  while (at < lines.length && lines[at] !== '') {
    if (!/^[A-Za-z]+: /.test(lines[at]!)) return undefined;
    at++;
  }
  at++;
  const base64: string[] = [];
  for (; at < lines.length && lines[at] !== ARMOR_END; at++) {
    const line = lines[at]!;
    // The checksum line, last before the end line.
    if (line.startsWith('=') && line.length === 5 && lines[at + 1] === ARMOR_END) continue;
    if (!BASE64_LINE.test(line)) return undefined;
    base64.push(line);
  }
  if (at >= lines.length || lines.slice(at + 1).some((line) => line.length > 0)) return undefined;
  const joined = base64.join('');
  // Padding only at the very end: Node's decoder would stop at one inside and drop the rest.
  if (joined.length === 0 || joined.length % 4 !== 0 || /=[^=]/.test(joined)) return undefined;
  return Buffer.from(joined, 'base64');
}

/**
 * What is wrong with a message's armor, read without any passphrase: undefined when it has its
 * begin and end lines and, when this reader takes its body, a checksum (if it has one) that
 * matches its bytes. A file cut short lacks its end line; a changed character breaks the CRC-24.
 * Either is damage, which no passphrase can be blamed for. A body of a shape this reader does not
 * take is left to openpgp.js ({@link messageDamage}).
 */
export function armorDamage(text: string): string | undefined {
  const lines = text.split('\n').map(withoutTrailingSpace);
  if (!lines.includes(ARMOR_BEGIN)) return text.length === 0 ? 'it is empty' : 'it does not begin as an armored OpenPGP message';
  if (!lines.includes(ARMOR_END)) return 'it is cut short (it has no end line)';
  const bytes = dearmorMessage(text);
  if (!bytes) return undefined;
  const end = lines.indexOf(ARMOR_END);
  const last = lines[end - 1]!;
  if (last.startsWith('=') && last.length === 5) {
    const crc = armorChecksum(bytes);
    if (Buffer.from([crc >> 16, (crc >> 8) & 0xff, crc & 0xff]).toString('base64') !== last.slice(1)) return 'its checksum does not match its contents (it was changed)';
  }
  return undefined;
}

/**
 * A line without the spaces, tabs and carriage return at its end. Counted off by hand: a regular
 * expression anchored at the end (`/[ \t]+$/`) tries again from every blank of a run that is not at
 * the end, and a key file of one long such run would cost seconds.
 */
function withoutTrailingSpace(line: string): string {
  let end = line.length;
  while (end > 0 && (line[end - 1] === ' ' || line[end - 1] === '\t' || line[end - 1] === '\r')) end--;
  return line.slice(0, end);
}
