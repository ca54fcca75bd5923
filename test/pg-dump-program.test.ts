import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { pgDumpProgram } from '@strata/sdk';
import { useTempDir } from './helpers/env.js';

/**
 * Which pg_dump a logical PostgreSQL backup runs: the one on PATH, except Debian's pg_wrapper,
 * whose choice (with PGHOST set, as Strata sets it: the newest version installed) is made once
 * here instead of by a Perl script at every call. The folders are made here, as Debian lays them
 * out, so that every case runs on any machine.
 */
describe('the pg_dump a logical backup runs', () => {
  const dir = useTempDir();
  let savedBindir: string | undefined;
  beforeEach(() => {
    savedBindir = process.env['STRATA_PG_BINDIR'];
    delete process.env['STRATA_PG_BINDIR'];
  });
  afterEach(() => {
    if (savedBindir === undefined) delete process.env['STRATA_PG_BINDIR'];
    else process.env['STRATA_PG_BINDIR'] = savedBindir;
  });

  function program(file: string): void {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, '#!/bin/sh\nexit 0\n');
    chmodSync(file, 0o755);
  }

  /** A Debian layout: /usr/bin/pg_dump a link to pg_wrapper, and the given versions' programs. */
  function debian(versions: string[], { withoutPgDump = [] as string[] } = {}): { path: string; binroot: string } {
    const root = path.join(dir.path, `debian-${versions.join('-')}-${withoutPgDump.join('-')}`);
    program(path.join(root, 'share/postgresql-common/pg_wrapper'));
    mkdirSync(path.join(root, 'bin'), { recursive: true });
    symlinkSync(path.join(root, 'share/postgresql-common/pg_wrapper'), path.join(root, 'bin/pg_dump'));
    for (const version of versions) {
      if (withoutPgDump.includes(version)) mkdirSync(path.join(root, 'lib', version, 'bin'), { recursive: true });
      else program(path.join(root, 'lib', version, 'bin/pg_dump'));
    }
    return { path: [path.join(root, 'empty'), path.join(root, 'bin')].join(path.delimiter), binroot: path.join(root, 'lib') };
  }

  it("runs the newest installed version's pg_dump in place of Debian's wrapper, which would run that one", () => {
    const several = debian(['13', '15', '17']);
    assert.equal(pgDumpProgram(several), path.join(several.binroot, '17/bin/pg_dump'));
    // A version whose client programs lack pg_dump is not a candidate, to the wrapper either.
    const partial = debian(['15', '16'], { withoutPgDump: ['16'] });
    assert.equal(pgDumpProgram(partial), path.join(partial.binroot, '15/bin/pg_dump'));
    // 9.x is named as the wrapper reads it: where it is the newest, the wrapper chooses.
    const old = debian(['9.6']);
    assert.equal(pgDumpProgram(old), 'pg_dump');
  });

  it('runs pg_dump from PATH as it is when it is not the wrapper, and leaves a missing one to be reported', () => {
    const own = path.join(dir.path, 'own');
    program(path.join(own, 'pg_dump'));
    const layout = debian(['15']);
    assert.equal(pgDumpProgram({ path: [own, layout.path].join(path.delimiter), binroot: layout.binroot }), 'pg_dump');
    assert.equal(pgDumpProgram({ path: path.join(dir.path, 'nowhere'), binroot: layout.binroot }), 'pg_dump');
    // The wrapper with no version installed says itself what to install.
    assert.equal(pgDumpProgram(debian([])), 'pg_dump');
  });

  it('takes STRATA_PG_BINDIR first', () => {
    const bindir = path.join(dir.path, 'bindir');
    program(path.join(bindir, 'pg_dump'));
    process.env['STRATA_PG_BINDIR'] = bindir;
    assert.equal(pgDumpProgram(debian(['15', '17'])), path.join(bindir, 'pg_dump'));
  });
});
