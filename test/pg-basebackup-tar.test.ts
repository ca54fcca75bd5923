import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MANIFEST_TAIL_BYTES, TarEntryCatcher, lastWalRange } from '@strata/sdk';

/**
 * A physical backup streams pg_basebackup's tar straight into the artifact and reads its
 * backup_label and backup_manifest as they pass (their positions give the backup its place in
 * the log). A pipe hands the tar over in pieces of any size, so a header or a body may be cut
 * anywhere: these feed a real tar (made by GNU tar, laid out as pg_basebackup lays its own out)
 * in every kind of piece and check that exactly those two bodies come out.
 */
describe('reading backup_label and backup_manifest from a streaming tar', function () {
  let dir: string;
  let tar: Buffer;
  const label = 'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n';
  const manifest = JSON.stringify({ 'PostgreSQL-Backup-Manifest-Version': 1, Files: [], 'WAL-Ranges': [{ Timeline: 1, 'Start-LSN': '0/2000028', 'End-LSN': '0/2000100' }], pad: 'm'.repeat(1500) });

  before(function () {
    dir = mkdtempSync(path.join(tmpdir(), 'strata-basetar-'));
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'base', '1'), { recursive: true });
    writeFileSync(path.join(root, 'backup_label'), label);
    // Bodies of odd sizes (padding), one a whole number of blocks, one empty, and a file whose
    // name holds "backup_label" without being it.
    writeFileSync(path.join(root, 'base', '1', '16384'), randomBytes(70_001));
    writeFileSync(path.join(root, 'base', '1', '16385'), randomBytes(8192));
    writeFileSync(path.join(root, 'base', '1', 'backup_label'), 'not the label\n');
    writeFileSync(path.join(root, 'empty'), '');
    writeFileSync(path.join(root, 'backup_manifest'), manifest);
    const made = spawnSync('tar', ['--format=ustar', '-c', '-f', path.join(dir, 'base.tar'), '-C', root, 'backup_label', 'base', 'empty', 'backup_manifest']);
    assert.equal(made.status, 0, made.stderr.toString());
    tar = readFileSync(path.join(dir, 'base.tar'));
  });

  after(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  const catchIn = (pieces: Buffer[], end = true): Map<string, Buffer> => {
    const catcher = new TarEntryCatcher(new Set(['backup_label', 'backup_manifest']));
    for (const piece of pieces) catcher.feed(piece);
    if (end) catcher.end();
    return catcher.caught;
  };
  const cut = (sizes: (i: number) => number): Buffer[] => {
    const out: Buffer[] = [];
    for (let at = 0, i = 0; at < tar.length; i++) {
      const n = Math.max(1, sizes(i));
      out.push(tar.subarray(at, at + n));
      at += n;
    }
    return out;
  };
  const expectBoth = (caught: Map<string, Buffer>, how: string): void => {
    assert.deepEqual([...caught.keys()].sort(), ['backup_label', 'backup_manifest'], how);
    assert.equal(caught.get('backup_label')!.toString(), label, how);
    assert.equal(caught.get('backup_manifest')!.toString(), manifest, how);
  };

  it('in one piece, in pieces of one byte, and in pieces cut around every block boundary', function () {
    expectBoth(catchIn([tar]), 'one piece');
    expectBoth(catchIn(cut(() => 1)), 'one byte at a time');
    for (const size of [511, 512, 513, 1000, 4096, 65_536]) expectBoth(catchIn(cut(() => size)), `pieces of ${size} bytes`);
  });

  it('in pieces of random sizes', function () {
    for (let round = 0; round < 50; round++) {
      const sizes = randomBytes(tar.length);
      expectBoth(catchIn(cut((i) => (sizes[i]! % 3 === 0 ? sizes[i]! * 37 : sizes[i]!))), `random round ${round}`);
    }
  });

  it('keeps no manifest from a tar that ends inside it, and nothing after the end-of-archive blocks', function () {
    const manifestAt = tar.indexOf(Buffer.from(manifest.slice(0, 40)));
    assert.ok(manifestAt > 0);
    const truncated = catchIn([tar.subarray(0, manifestAt + 100)]);
    assert.deepEqual([...truncated.keys()], ['backup_label'], 'a cut-off manifest is not kept');
    // Bytes after the two zero blocks (a tar ends there) are not read as entries.
    const trailing = Buffer.concat([tar, Buffer.from(tar.subarray(0, 1024))]);
    expectBoth(catchIn([trailing]), 'with bytes after the end');
  });

  it("a cluster's manifest of any length: only its end is kept, and its WAL-Ranges are read from there", function () {
    // Laid out as pg_basebackup writes it, for some 500,000 files: longer than any entry read whole may be.
    const files = Array.from({ length: 500_000 }, (_, i) =>
      `{ "Path": "base/16384/${100000 + i}", "Size": 8192, "Last-Modified": "2026-12-03 06:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "0a1b2c3d" }`);
    const big = `{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n${files.join(',\n')}\n],\n` +
      `"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/9000028", "End-LSN": "0/9000138" }\n],\n"Manifest-Checksum": "${'c'.repeat(64)}"}\n`;
    assert.ok(big.length > 64 * 1024 * 1024);
    const root = path.join(dir, 'big');
    mkdirSync(root);
    writeFileSync(path.join(root, 'backup_label'), label);
    writeFileSync(path.join(root, 'backup_manifest'), big);
    const made = spawnSync('tar', ['--format=ustar', '-c', '-f', path.join(dir, 'big.tar'), '-C', root, 'backup_label', 'backup_manifest']);
    assert.equal(made.status, 0, made.stderr.toString());
    const bigTar = readFileSync(path.join(dir, 'big.tar'));
    for (const size of [1, 511, 65_536, 1_000_003]) {
      const catcher = new TarEntryCatcher(new Set(['backup_label']), new Map([['backup_manifest', MANIFEST_TAIL_BYTES]]));
      // One byte at a time only around the manifest's end, where the kept part begins.
      const slow = size === 1 ? bigTar.length - 200_000 : 0;
      catcher.feed(bigTar.subarray(0, slow));
      for (let at = slow; at < bigTar.length; at += size) catcher.feed(bigTar.subarray(at, at + size));
      catcher.end();
      assert.equal(catcher.caught.get('backup_label')!.toString(), label);
      assert.equal(catcher.caught.get('backup_manifest')!.toString(), big.slice(-MANIFEST_TAIL_BYTES), `pieces of ${size}`);
      assert.deepEqual(lastWalRange(catcher.caught.get('backup_manifest')!.toString()), { Timeline: 1, 'Start-LSN': '0/9000028', 'End-LSN': '0/9000138' });
    }
    // A short manifest is kept whole, as before.
    const small = new TarEntryCatcher(new Set(['backup_label']), new Map([['backup_manifest', MANIFEST_TAIL_BYTES]]));
    small.feed(tar);
    small.end();
    assert.equal(small.caught.get('backup_manifest')!.toString(), manifest);
    // Up to a limit a manifest is kept whole (to hand forward to the next incremental), and said to be.
    for (const [wholeUpTo, whole] of [[big.length, true], [big.length - 1, false]] as const) {
      const catcher = new TarEntryCatcher(new Set(['backup_label']), new Map([['backup_manifest', MANIFEST_TAIL_BYTES]]), wholeUpTo);
      for (let at = 0; at < bigTar.length; at += 65_536) catcher.feed(bigTar.subarray(at, at + 65_536));
      catcher.end();
      assert.equal(catcher.caught.get('backup_manifest')!.toString(), whole ? big : big.slice(-MANIFEST_TAIL_BYTES), `kept whole up to ${wholeUpTo}`);
      assert.equal(catcher.caughtWhole.has('backup_manifest'), whole);
      assert.equal(catcher.caughtWhole.has('backup_label'), true);
    }
  });

  it('a manifest whose end has no readable WAL-Ranges is an error that says so', function () {
    for (const end of ['"Files": [] }', '"WAL-Ranges": [ { "Timeline": 1 ', '"WAL-Ranges": [] }', '"WAL-Ranges": [{"Timeline": "1", "Start-LSN": "0/1", "End-LSN": "0/2"}]']) {
      assert.throws(() => lastWalRange(end), /no readable WAL-Ranges/, end);
    }
    // Several ranges (a backup taken across a timeline switch on a standby): the last counts.
    assert.deepEqual(lastWalRange('"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/1", "End-LSN": "0/5" },\n{ "Timeline": 2, "Start-LSN": "0/5", "End-LSN": "0/9" }\n]'), { Timeline: 2, 'Start-LSN': '0/5', 'End-LSN': '0/9' });
  });
});
