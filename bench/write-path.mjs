// Benchmark: the artifact write path alone, without a database: a file read in pieces (64 KiB, as a
// pipe from pg_basebackup gives them; 1 MiB with --fixed, as the SQLite engine reads its copy),
// cut into chunks (content-defined, 64 KiB average, as the physical PostgreSQL engine does; fixed
// 4 KiB pages with --fixed, as SQLite), each chunk hashed, then zstd 3, OpenPGP (compat, a
// generated data key) and the artifact's SHA-256, to /dev/null. What is left of a backup's time
// once the database's own work is taken out, and where it goes: CPU seconds per thread.
//
//   node bench/write-path.mjs FILE [--fixed] [--stage archive|compress|all] [--rounds 3] [--root DIR] [--read-kib N] [--coalesce-kib N] [--pipe]
//
// FILE: any large file; a pg_basebackup tar (pg_basebackup -Ft -D - -X none > base.tar) is what the
// numbers in bench/README.md used. --root: another checkout's built packages (to compare builds).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from './lib/measure.mjs';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    fixed: { type: 'boolean', default: false },
    stage: { type: 'string', default: 'all' },
    rounds: { type: 'string', default: '3' },
    root: { type: 'string', default: ROOT },
    // The size of each read (64 KiB: a pipe's; 1 MiB with --fixed, as the SQLite engine reads).
    'read-kib': { type: 'string' },
    // Reads copied into slabs of this size before the chunker sees them.
    'coalesce-kib': { type: 'string' },
    // Read from a pipe (`cat FILE` as a child process, as a backup reads pg_basebackup) instead of the file.
    pipe: { type: 'boolean', default: false },
  },
});
const file = positionals[0];
if (!file) throw new Error('usage: node bench/write-path.mjs FILE [--fixed] [--stage archive|compress|all] [--rounds N] [--root DIR]');
if (!['archive', 'compress', 'all'].includes(opts.stage)) throw new Error(`--stage must be archive, compress or all, not ${opts.stage}`);
const root = path.resolve(opts.root);
const { writeArchive } = await import(path.join(root, 'packages/core/dist/format/artifact-writer.js'));
const { getCodec } = await import(path.join(root, 'packages/core/dist/compression.js'));
const { encryptStream, GeneratedKey } = await import(path.join(root, 'packages/core/dist/encryption.js'));

/** CPU seconds of each thread of this process so far (from /proc; Linux only). */
function threadCpu() {
  return readdirSync('/proc/self/task').map((task) => {
    const stat = readFileSync(`/proc/self/task/${task}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { task, seconds: (Number(fields[11]) + Number(fields[12])) / 100 };
  });
}

async function* coalesced(source) {
  if (!opts['coalesce-kib']) return yield* source;
  const size = Number(opts['coalesce-kib']) * 1024;
  let slab = Buffer.allocUnsafeSlow(size);
  let used = 0;
  for await (const piece of source) {
    let at = 0;
    while (at < piece.length) {
      const n = Math.min(piece.length - at, size - used);
      piece.copy(slab, used, at, at + n);
      used += n;
      at += n;
      if (used === size) {
        yield slab;
        slab = Buffer.allocUnsafeSlow(size);
        used = 0;
      }
    }
  }
  if (used > 0) yield slab.subarray(0, used);
}

async function once() {
  const size = statSync(file).size;
  const chunking = opts.fixed ? { kind: 'fixed', size: 4096 } : { kind: 'content-defined', averageSize: 64 * 1024 };
  const { archive, result } = writeArchive({
    manifest: { format: 'strata-artifact', formatVersion: 1, id: 'bench', database: 'bench', engine: 'bench', type: 'full', createdAt: new Date().toISOString(), parent: null, base: null, label: null, tags: [], source: file, databaseBytes: size, schemaFingerprint: '', engineMeta: {}, tool: { name: 'strata', version: 'bench' } },
    tables: async () => [],
    // --fixed: a stream of known size, stored whole (as SQLite's); else segments (as pg_basebackup's).
    streams: [{ name: 'data', chunking, ...(opts.fixed ? { size } : {}), open: () => coalesced(opts.pipe ? spawn('cat', [file], { stdio: ['ignore', 'pipe', 'inherit'] }).stdout : createReadStream(file, { highWaterMark: opts['read-kib'] ? Number(opts['read-kib']) * 1024 : opts.fixed ? 1024 * 1024 : 64 * 1024 })) }],
    schemaSql: '',
    parents: new Map(),
  });
  let bytes = archive;
  if (opts.stage !== 'archive') bytes = getCodec('zstd').compress(bytes, 3);
  if (opts.stage === 'all') bytes = encryptStream(bytes, new GeneratedKey(randomBytes(32).toString('base64url')), 'compat');
  const before = new Map(threadCpu().map((t) => [t.task, t.seconds]));
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  const sha = createHash('sha256');
  const out = createWriteStream('/dev/null');
  let stored = 0;
  for await (const piece of bytes) {
    sha.update(piece);
    stored += piece.length;
    if (!out.write(piece)) await new Promise((resolve) => out.once('drain', resolve));
  }
  const wall = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const threads = threadCpu()
    .map((t) => t.seconds - (before.get(t.task) ?? 0))
    .filter((s) => s >= 0.05)
    .sort((a, b) => b - a);
  return { wall, cpu: (cpu.user + cpu.system) / 1e6, storedMB: stored / 1e6, chunks: result.manifest.streams[0].chunkCount, threads };
}

console.log(`write path: ${file} (${(statSync(file).size / 1e6).toFixed(1)} MB), ${opts.fixed ? 'fixed 4 KiB chunks' : 'content-defined 64 KiB chunks'}, stage ${opts.stage}, build ${root}`);
const rounds = [];
for (let i = 0; i < Number(opts.rounds); i++) {
  const r = await once();
  rounds.push(r);
  console.log(`  round ${i + 1}: ${r.wall.toFixed(2)} s wall, ${r.cpu.toFixed(2)} CPU s, ${r.storedMB.toFixed(1)} MB out, ${r.chunks} chunks; busiest threads (CPU s): ${r.threads.map((s) => s.toFixed(2)).join(', ')}`);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`median: ${median(rounds.map((r) => r.wall)).toFixed(2)} s wall, ${median(rounds.map((r) => r.cpu)).toFixed(2)} CPU s`);
