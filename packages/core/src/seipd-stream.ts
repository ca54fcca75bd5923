import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { StrataError } from './errors.js';

/**
 * The bulk layer of an OpenPGP message in the `compat` profile, written and read here instead of
 * by openpgp.js: a Symmetrically Encrypted Integrity Protected Data packet, version 1 (RFC 9580
 * 5.13.1), around one literal data packet (5.9), both streamed with partial body lengths (4.2.1.4).
 *
 * Why by hand: openpgp.js streams this packet through web streams, a tee of the plaintext for the
 * MDC and a copy of every piece at each of them; measured on a backup of 1.5 GB (560 MB
 * after zstd) that cost the main thread about 3 CPU seconds, as much as reading, chunking and
 * hashing the 1.5 GB, where the work itself (AES-256-CFB and SHA-1 over 560 MB, both Node's
 * OpenSSL) is under one; reading it back cost a restore 4.5 CPU s. The cryptography stays Node's:
 * the session key packet (the passphrase's S2K) is session-key-packet.ts's, and a message of any
 * other shape (the `modern` profile's, another program's) is read by openpgp.js;
 * `gpg --decrypt` reads what is written here in the tests. What is left here is framing, and the
 * integrity check the format defines.
 */

/** Bytes of every partial body length part but the last: 2^20, a power of two as the format requires. */
const PART_BYTES = 1 << 20;
const PART_LENGTH_OCTET = 0xe0 + 20;

const AES_BLOCK = 16;
/** New-format packet tags (0xC0 | tag). */
const TAG_SEIPD = 0xc0 | 18;
const TAG_LITERAL = 0xc0 | 11;
const TAG_MDC = 0xc0 | 19;
const SEIPD_VERSION = 1;
const SHA1_BYTES = 20;

/** A definite new-format body length (RFC 9580 4.2.1.1–4.2.1.3). */
function lengthOctets(length: number): Buffer {
  if (length < 192) return Buffer.from([length]);
  if (length < 8384) {
    const rest = length - 192;
    return Buffer.from([(rest >> 8) + 192, rest & 0xff]);
  }
  const out = Buffer.alloc(5);
  out[0] = 0xff;
  out.writeUInt32BE(length, 1);
  return out;
}

/**
 * Frames one packet's body, given in pieces, as parts of PART_BYTES with a partial length octet
 * each and a last part with a definite length. The last part is never empty (bytes are held
 * back until more than a part is in), and a body of at most one part gets a plain definite length.
 */
class PartialFramer {
  #held: Buffer[] = [];
  #heldBytes = 0;
  #started = false;

  constructor(readonly tag: number) {}

  *push(piece: Buffer): Generator<Buffer> {
    if (piece.length === 0) return;
    this.#held.push(piece);
    this.#heldBytes += piece.length;
    // Strictly more than a part: the bytes after it make the last part non-empty.
    while (this.#heldBytes > PART_BYTES) yield* this.#part(PART_BYTES, Buffer.from([PART_LENGTH_OCTET]));
  }

  *end(): Generator<Buffer> {
    yield* this.#part(this.#heldBytes, lengthOctets(this.#heldBytes));
  }

  *#part(size: number, header: Buffer): Generator<Buffer> {
    if (!this.#started) {
      this.#started = true;
      yield Buffer.from([this.tag]);
    }
    yield header;
    let left = size;
    while (left > 0) {
      const first = this.#held[0]!;
      if (first.length <= left) {
        this.#held.shift();
        left -= first.length;
        yield first;
      } else {
        this.#held[0] = first.subarray(left);
        yield first.subarray(0, left);
        left = 0;
      }
    }
    this.#heldBytes -= size;
  }
}

/**
 * Encrypts `source` under `sessionKey` (32 bytes, AES-256) as a SEIPDv1 packet; the caller puts
 * the session key packet in front. Yields pieces it never writes to again.
 */
export async function* seipdV1(source: AsyncIterable<Uint8Array>, sessionKey: Uint8Array): AsyncGenerator<Buffer> {
  // CFB over the whole body with a zero IV; the random prefix (a block, then its last two bytes
  // again) takes the IV's place, as OpenPGP's CFB without resynchronisation specifies.
  const cipher = createCipheriv('aes-256-cfb', sessionKey, Buffer.alloc(AES_BLOCK));
  const mdc = createHash('sha1');
  const seal = (plain: Buffer): Buffer => {
    mdc.update(plain);
    return cipher.update(plain);
  };
  const outer = new PartialFramer(TAG_SEIPD);
  const literal = new PartialFramer(TAG_LITERAL);
  yield* outer.push(Buffer.from([SEIPD_VERSION]));
  const prefix = randomBytes(AES_BLOCK + 2);
  prefix.copy(prefix, AES_BLOCK, AES_BLOCK - 2, AES_BLOCK);
  yield* outer.push(seal(prefix));
  // Literal data: binary ('b'), no file name, the time of writing.
  const date = Buffer.alloc(4);
  date.writeUInt32BE(Math.floor(Date.now() / 1000));
  const literalHeader = Buffer.concat([Buffer.from([0x62, 0]), date]);
  // CFB is a stream cipher here: pieces of any size (a header octet, a part) chain as one.
  const sealFramed = function* (framed: Iterable<Buffer>): Generator<Buffer> {
    for (const plain of framed) yield* outer.push(seal(plain));
  };
  yield* sealFramed(literal.push(literalHeader));
  for await (const piece of source) {
    yield* sealFramed(literal.push(Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength)));
  }
  yield* sealFramed(literal.end());
  // The MDC packet: its header is hashed with everything before it, its body is that hash.
  const mdcHeader = Buffer.from([TAG_MDC, SHA1_BYTES]);
  yield* outer.push(seal(mdcHeader));
  yield* outer.push(cipher.update(mdc.digest()));
  const rest = cipher.final();
  if (rest.length > 0) yield* outer.push(rest);
  yield* outer.end();
}

/** Octets of the modification detection code packet at the end of the plaintext: 0xD3 0x14 and a SHA-1. */
const MDC_BYTES = 2 + SHA1_BYTES;
/** The random prefix before the plaintext: a block, then its last two octets again. */
const PREFIX_BYTES = AES_BLOCK + 2;

/**
 * Follows a packet body in new-format lengths (partial parts, then a part of definite length) as
 * its bytes arrive, handing out the body and keeping what follows the body's end.
 */
class BodyReader {
  #header: number[] = [];
  #remaining = 0;
  #last = false;
  #inPart = false;
  done = false;
  /** What came after the body's end, once done. */
  after: Buffer = Buffer.alloc(0);

  /** The body bytes in `piece`, in order. */
  *feed(piece: Buffer): Generator<Buffer> {
    let at = 0;
    while (at < piece.length) {
      if (this.done) {
        this.after = Buffer.concat([this.after, piece.subarray(at)]);
        return;
      }
      if (!this.#inPart) {
        this.#header.push(piece[at++]!);
        if (!this.#readHeader()) continue;
        if (this.#remaining === 0 && this.#last) {
          this.done = true;
          continue;
        }
      }
      const take = Math.min(this.#remaining, piece.length - at);
      if (take > 0) yield piece.subarray(at, at + take);
      at += take;
      this.#remaining -= take;
      if (this.#remaining === 0) {
        this.#inPart = false;
        if (this.#last) this.done = true;
      }
    }
  }

  /** True once `#header` holds a whole length (RFC 9580 4.2.1). */
  #readHeader(): boolean {
    const h = this.#header;
    const first = h[0]!;
    let length: number;
    let last = true;
    if (first < 192) length = first;
    else if (first < 224) {
      if (h.length < 2) return false;
      length = ((first - 192) << 8) + h[1]! + 192;
    } else if (first < 255) {
      length = 2 ** (first & 0x1f);
      last = false;
    } else {
      if (h.length < 5) return false;
      length = Buffer.from(h.slice(1, 5)).readUInt32BE(0);
    }
    this.#header = [];
    this.#remaining = length;
    this.#last = last;
    this.#inPart = true;
    return true;
  }
}

/** The first packets of a message, as far as they tell whether {@link openSeipdV1} reads it. */
export interface MessageHead {
  /** The session key packets, whole (to be opened with the passphrase). */
  readonly sessionKeyPackets: Buffer;
  /** The encrypted data packet's bytes received so far, from its tag on. */
  readonly dataPacket: Buffer;
}

/**
 * Splits the start of a message into its session key packets and the beginning of a SEIPDv1
 * packet that follows them, or undefined when the message has another shape (openpgp.js reads
 * those). `head` must hold the session key packets and 64 octets after them, or the whole message.
 */
export function seipdV1Head(head: Buffer): MessageHead | undefined {
  let at = 0;
  while (at < head.length && head[at] === (0xc0 | 3)) {
    const first = head[at + 1];
    // One-octet lengths, version 4 (version 6, with AEAD, is the modern profile's).
    if (first === undefined || first >= 192 || head[at + 2] !== 4) return undefined;
    at += 2 + first;
  }
  if (at === 0 || at >= head.length) return undefined;
  if (head[at] !== TAG_SEIPD) return undefined;
  // The body's first octet is the version (2 is AEAD): past a length of one, two or five octets.
  const lengthOctet = head[at + 1];
  if (lengthOctet === undefined) return undefined;
  const lengthBytes = lengthOctet < 192 || (lengthOctet >= 224 && lengthOctet < 255) ? 1 : lengthOctet < 224 ? 2 : 5;
  if (head[at + 1 + lengthBytes] !== SEIPD_VERSION) return undefined;
  return { sessionKeyPackets: head.subarray(0, at), dataPacket: head.subarray(at) };
}

/** A packet's header at `at`: its tag, where its body starts, and the body's first run of bytes. */
interface PacketHeader {
  readonly tag: number;
  readonly bodyAt: number;
  /** Octets of the body that follow bodyAt without another length header: all of it, or its first part. */
  readonly run: number;
  /** True when `run` is the whole body. */
  readonly whole: boolean;
}

/** Reads a packet header in either format (RFC 9580 4.2): gpg writes the old one, Strata and openpgp.js the new. */
function packetHeaderAt(bytes: Buffer, at: number): PacketHeader | undefined {
  const first = bytes[at];
  if (first === undefined || (first & 0x80) === 0) return undefined;
  const octet = (n: number): number | undefined => bytes[at + 1 + n];
  if (first & 0x40) {
    const tag = first & 0x3f;
    const l = octet(0);
    if (l === undefined) return undefined;
    if (l < 192) return { tag, bodyAt: at + 2, run: l, whole: true };
    if (l < 224) {
      const l2 = octet(1);
      return l2 === undefined ? undefined : { tag, bodyAt: at + 3, run: ((l - 192) << 8) + l2 + 192, whole: true };
    }
    if (l < 255) return { tag, bodyAt: at + 2, run: 2 ** (l & 0x1f), whole: false };
    if (at + 6 > bytes.length) return undefined;
    return { tag, bodyAt: at + 6, run: bytes.readUInt32BE(at + 2), whole: true };
  }
  const tag = (first >> 2) & 0x0f;
  const lengthBytes = [1, 2, 4, 0][first & 3]!;
  // An old-format packet of indeterminate length runs to the end of the message.
  if (lengthBytes === 0) return { tag, bodyAt: at + 1, run: Infinity, whole: true };
  if (at + 1 + lengthBytes > bytes.length) return undefined;
  return { tag, bodyAt: at + 1 + lengthBytes, run: bytes.readUIntBE(at + 1, lengthBytes), whole: true };
}

const TAG_NUMBER_SESSION_KEY = 3;
const TAG_NUMBER_SEIPD = 18;

/**
 * The session key packets at a message's start and the first octets of encrypted data in the
 * SEIPDv1 packet after them (the prefix, enough for OpenPGP's quick check of a key), in either
 * packet format, or undefined for a message of another shape.
 */
export function seipdV1Start(head: Buffer): { sessionKeyPackets: Buffer; encryptedStart: Buffer } | undefined {
  let at = 0;
  let header = packetHeaderAt(head, at);
  while (header?.tag === TAG_NUMBER_SESSION_KEY && header.whole) {
    at = header.bodyAt + header.run;
    header = packetHeaderAt(head, at);
  }
  if (at === 0 || header?.tag !== TAG_NUMBER_SEIPD || head[header.bodyAt] !== SEIPD_VERSION) return undefined;
  const encryptedStart = head.subarray(header.bodyAt + 1, header.bodyAt + Math.min(header.run, 1 + PREFIX_BYTES));
  return encryptedStart.length === PREFIX_BYTES ? { sessionKeyPackets: head.subarray(0, at), encryptedStart } : undefined;
}

/**
 * The plaintext of a SEIPDv1 packet (from its tag on: `head`, then the rest of the message from
 * `rest`) under a 32-byte AES-256 session key. Throws PASSPHRASE_WRONG when the key does not open
 * it (the prefix check) or the modification detection code does not match, ARTIFACT_CORRUPT when
 * it is cut short or not shaped as Strata writes it. Like every decryption here, what it yields is
 * unverified until it ends without an error.
 */
export async function* openSeipdV1(head: Buffer, rest: AsyncIterator<Uint8Array>, sessionKey: Uint8Array): AsyncGenerator<Buffer> {
  const decipher = createDecipheriv('aes-256-cfb', sessionKey, Buffer.alloc(AES_BLOCK));
  const mdc = createHash('sha1');
  const outer = new BodyReader();
  let versionSeen = false;
  // The plaintext is the prefix, the literal data packet, then the MDC packet: the last MDC_BYTES
  // are held back until the end shows which they are.
  let held = Buffer.alloc(0);
  let prefix: Buffer | undefined = Buffer.alloc(0);
  const literal = new BodyReader();
  let literalTagSeen = false;
  // The literal body starts with its format, name length, name and date: skipped, not data.
  let literalHeader: Buffer | undefined = Buffer.alloc(0);
  const corrupt = (why: string): StrataError => new StrataError('ARTIFACT_CORRUPT', `decrypt: not a readable OpenPGP message (${why})`);

  const plaintext = function* (plain: Buffer): Generator<Buffer> {
    mdc.update(plain);
    let at = 0;
    if (prefix) {
      const take = Math.min(PREFIX_BYTES - prefix.length, plain.length);
      prefix = Buffer.concat([prefix, plain.subarray(0, take)]);
      at = take;
      if (prefix.length < PREFIX_BYTES) return;
      // The quick check OpenPGP builds in: a wrong session key fails it but for 1 in 65,536.
      if (prefix[AES_BLOCK] !== prefix[AES_BLOCK - 2] || prefix[AES_BLOCK + 1] !== prefix[AES_BLOCK - 1]) {
        throw new StrataError('PASSPHRASE_WRONG', 'decrypt: the passphrase does not decrypt this data, or the data was altered (its session key does not open it)');
      }
      prefix = undefined;
    }
    if (at < plain.length && !literalTagSeen) {
      if (plain[at] !== TAG_LITERAL) throw corrupt('the encrypted data holds no literal data packet');
      literalTagSeen = true;
      at++;
    }
    if (at >= plain.length) return;
    if (literal.done) throw corrupt('data after the literal data packet');
    for (const body of literal.feed(plain.subarray(at))) {
      let data = body;
      while (literalHeader && data.length > 0) {
        // Two octets (format, name length), then the name and a four-octet date.
        const need = literalHeader.length < 2 ? 2 : 6 + literalHeader[1]!;
        const take = Math.min(need - literalHeader.length, data.length);
        literalHeader = Buffer.concat([literalHeader, data.subarray(0, take)]);
        data = data.subarray(take);
        if (literalHeader.length >= 2 && literalHeader.length === 6 + literalHeader[1]!) literalHeader = undefined;
      }
      if (data.length > 0) yield data;
    }
    if (literal.after.length > 0) throw corrupt('data after the literal data packet');
  };

  const ciphertext = function* (piece: Buffer): Generator<Buffer> {
    for (let body of outer.feed(piece)) {
      if (!versionSeen) {
        if (body[0] !== SEIPD_VERSION) throw corrupt(`encrypted data packet version ${body[0]}`);
        versionSeen = true;
        body = body.subarray(1);
        if (body.length === 0) continue;
      }
      const plain = decipher.update(body);
      if (plain.length >= MDC_BYTES) {
        if (held.length > 0) yield* plaintext(held);
        yield* plaintext(plain.subarray(0, plain.length - MDC_BYTES));
        held = Buffer.from(plain.subarray(plain.length - MDC_BYTES));
      } else {
        const joined = Buffer.concat([held, plain]);
        if (joined.length > MDC_BYTES) yield* plaintext(joined.subarray(0, joined.length - MDC_BYTES));
        held = joined.subarray(Math.max(0, joined.length - MDC_BYTES));
      }
    }
    if (outer.after.length > 0) throw corrupt('bytes after the encrypted data packet');
  };

  // The packet's tag was checked by seipdV1Head; its body follows.
  yield* ciphertext(head.subarray(1));
  for (;;) {
    const next = await rest.next();
    if (next.done) break;
    const piece = next.value;
    yield* ciphertext(Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength));
  }
  if (!outer.done) throw corrupt('the message ends before its encrypted data packet does');
  const tail = decipher.final();
  if (tail.length > 0) throw corrupt('the encrypted data ends inside a block');
  if (prefix || !literalTagSeen || !literal.done || literalHeader || held.length !== MDC_BYTES) throw corrupt('the encrypted data ends early');
  if (held[0] !== TAG_MDC || held[1] !== SHA1_BYTES) {
    throw new StrataError('PASSPHRASE_WRONG', 'decrypt: the passphrase does not decrypt this data, or the data was altered (no modification detection code at its end)');
  }
  mdc.update(held.subarray(0, 2));
  if (!timingSafeEqual(mdc.digest(), held.subarray(2))) {
    throw new StrataError('PASSPHRASE_WRONG', 'decrypt: the passphrase does not decrypt this data, or the data was altered (modification detected)');
  }
}
