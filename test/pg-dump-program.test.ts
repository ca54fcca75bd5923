import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { pgDumpProgram } from '@strata/sdk';
import { useTempDir } from './helpers/env.js';

/**
 * Which pg_dump a logical PostgreSQL backup runs: the one on PATH, except Debian's pg_wrapper,
 * whose choice is made once here instead of by a Perl script at every call. The folders are
 * made here, as Debian lays them out, so that every case runs on any machine.
 */
describe('the pg_dump a logical backup runs', () => {
  const dir = useTempDir();

  function program(file: string): void {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, '#!/bin/sh\nexit 0\n');
    chmodSync(file, 0o755);
  }

  /** A Debian layout: /usr/bin/pg_dump a link to pg_wrapper, and the given major versions' programs. */
  function debian(majors: number[], { withoutPgDump = [] as number[] } = {}): { path: string; binroot: string } {
    const root = path.join(dir.path, `debian-${majors.join('-')}-${withoutPgDump.join('-')}`);
    program(path.join(root, 'share/postgresql-common/pg_wrapper'));
    mkdirSync(path.join(root, 'bin'), { recursive: true });
    symlinkSync(path.join(root, 'share/postgresql-common/pg_wrapper'), path.join(root, 'bin/pg_dump'));
    for (const major of majors) {
      if (withoutPgDump.includes(major)) mkdirSync(path.join(root, 'lib', String(major), 'bin'), { recursive: true });
      else program(path.join(root, 'lib', String(major), 'bin/pg_dump'));
    }
    return { path: [path.join(root, 'empty'), path.join(root, 'bin')].join(path.delimiter), binroot: path.join(root, 'lib') };
  }

  it("runs the server's own major version's pg_dump in place of Debian's wrapper, else the newest installed", () => {
    const layout = debian([13, 15, 16, 17], { withoutPgDump: [16] });
    assert.equal(pgDumpProgram(15, layout), path.join(layout.binroot, '15/bin/pg_dump'));
    assert.equal(pgDumpProgram(13, layout), path.join(layout.binroot, '13/bin/pg_dump'));
    // 16's client programs are not all there: the newest, as the wrapper would.
    assert.equal(pgDumpProgram(16, layout), path.join(layout.binroot, '17/bin/pg_dump'));
    // Newer than any installed: the newest, whose version the backup then finds too old, and says so.
    assert.equal(pgDumpProgram(18, layout), path.join(layout.binroot, '17/bin/pg_dump'));
  });

  it('runs pg_dump from PATH as it is when it is not the wrapper, and leaves a missing one to be reported', () => {
    const own = path.join(dir.path, 'own');
    program(path.join(own, 'pg_dump'));
    const layout = debian([15]);
    assert.equal(pgDumpProgram(15, { path: [own, layout.path].join(path.delimiter), binroot: layout.binroot }), 'pg_dump');
    assert.equal(pgDumpProgram(15, { path: path.join(dir.path, 'nowhere'), binroot: layout.binroot }), 'pg_dump');
    // The wrapper with no version installed says itself what to install.
    const bare = debian([]);
    assert.equal(pgDumpProgram(15, bare), 'pg_dump');
  });

  it('takes STRATA_PG_BINDIR first', () => {
    const bindir = path.join(dir.path, 'bindir');
    program(path.join(bindir, 'pg_dump'));
    const saved = process.env['STRATA_PG_BINDIR'];
    process.env['STRATA_PG_BINDIR'] = bindir;
    try {
      assert.equal(pgDumpProgram(15, debian([15, 17])), path.join(bindir, 'pg_dump'));
    } finally {
      if (saved === undefined) delete process.env['STRATA_PG_BINDIR'];
      else process.env['STRATA_PG_BINDIR'] = saved;
    }
  });
});
