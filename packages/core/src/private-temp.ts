import * as fs from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import * as path from 'node:path';
import { wrapError } from './errors.js';
import { defaultIsAlive } from './journal.js';

/** Folders this code makes: `strata-<pid>-<random>`, so a later run can tell a dead process's leftovers. */
const FOLDER = /^strata-(\d+)-[A-Za-z0-9]{6}$/;

/**
 * A private temporary folder for plaintext copies of user data (snapshot copies of database files, scratch
 * restores, spooled rows). Created by `mkdtemp`, which makes it 0700 from the start, inside `base`
 * (the `tempDir` option, `STRATA_TMPDIR` in the CLI, else `TMPDIR` or /tmp). Files inside are
 * created 0600 by their writers. The folder is removed by {@link removePrivateTemp} on every normal
 * and cancelled exit; one left behind by a killed process is removed by the next run's
 * {@link sweepPrivateTemps}.
 */
export async function makePrivateTemp(base: string = tmpdir()): Promise<string> {
  try {
    await fs.mkdir(base, { recursive: true, mode: 0o700 });
    return await fs.mkdtemp(path.join(base, `strata-${process.pid}-`));
  } catch (err) {
    throw wrapError(`temporary folder: create one in ${base} (set STRATA_TMPDIR to a folder with room for a copy of the database)`, err);
  }
}

/** Removes a folder made by {@link makePrivateTemp}, with everything in it. */
export async function removePrivateTemp(folder: string): Promise<void> {
  await fs.rm(folder, { recursive: true, force: true }).catch(() => undefined);
}

/**
 * Removes the private temporary folders of processes of this user that are gone (killed before
 * they could clean up). Folders of live processes and of other users are left alone.
 */
export async function sweepPrivateTemps(base: string = tmpdir()): Promise<number> {
  let names: string[];
  try {
    names = await fs.readdir(base);
  } catch {
    return 0;
  }
  let removed = 0;
  const uid = process.getuid?.();
  for (const name of names) {
    const match = FOLDER.exec(name);
    if (!match || defaultIsAlive(Number(match[1]), hostname())) continue;
    const folder = path.join(base, name);
    const st = await fs.lstat(folder).catch(() => undefined);
    if (!st?.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
    await removePrivateTemp(folder);
    removed++;
  }
  return removed;
}
