import * as fs from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { FOREIGN_LEFTOVER_AGE_MS, processRuns, thisHostTag } from './work-databases.js';

/**
 * Folders a restore keeps beside its target while it works (the files being unpacked, the log
 * files spooled for the recovery): `<target>.strata-<kind>-<host>-<pid>-<random>`, private (0700)
 * from the start, as they hold decrypted copies of user data. The host tag and pid say whose it
 * is, so the next restore into the same parent folder can remove what a killed one left
 * ({@link sweepSideFolders}) without touching the work of one still running. Folders named after
 * one of these, with a suffix (`<side folder>.<anything>`), are swept with it.
 */

const SIDE = /^.*\.strata-([a-z]+)-([0-9a-f]{8})-(\d+)-([0-9a-f]{8})(?:\..*)?$/;

/** The path of a new side folder of `target` for `kind` (lowercase letters); not created. */
export function sideFolderPath(target: string, kind: string): string {
  if (!/^[a-z]+$/.test(kind)) throw new Error(`side folder kind ${JSON.stringify(kind)} is not lowercase letters`);
  return `${target}.strata-${kind}-${thisHostTag()}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Makes a new side folder of `target`, 0700 whatever the umask, and returns its path. */
export async function makeSideFolder(target: string, kind: string): Promise<string> {
  const folder = sideFolderPath(target, kind);
  await fs.mkdir(folder, { mode: 0o700 });
  await fs.chmod(folder, 0o700);
  return folder;
}

/**
 * Removes the side folders in `parent` whose process is gone: on this host when its pid no
 * longer runs; from another host (a shared file system) only once it is older than
 * {@link FOREIGN_LEFTOVER_AGE_MS}. Only this user's folders are touched. Each removal is said as
 * a warning (code STRATA_LEFTOVER, as the sweep of work databases says its own), prefixed with
 * `operation`; one that fails is said too, and the caller goes on. `beforeRemove` stops what the
 * dead process left running on a folder's files.
 */
export async function sweepSideFolders(parent: string, operation: string, now: Date = new Date(), beforeRemove?: (folder: string) => Promise<void>): Promise<string[]> {
  const names = await fs.readdir(parent).catch(() => [] as string[]);
  const uid = process.getuid?.();
  const removed: string[] = [];
  for (const name of names) {
    const match = SIDE.exec(name);
    if (!match) continue;
    const [, kind, host, pidText] = match as unknown as [string, string, string, string];
    const folder = path.join(parent, name);
    const st = await fs.lstat(folder).catch(() => undefined);
    if (!st?.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
    const pid = Number(pidText);
    let why: string;
    if (host === thisHostTag()) {
      if (processRuns(pid)) continue;
      why = `pid ${pid} on this host, which is no longer running`;
    } else {
      const age = now.getTime() - st.mtime.getTime();
      if (age <= FOREIGN_LEFTOVER_AGE_MS) continue;
      why = `a process on another host, ${Math.floor(age / (24 * 60 * 60 * 1000))} days ago`;
    }
    try {
      // What the dead process started in it (a server on its files) goes first.
      await beforeRemove?.(folder);
      await fs.rm(folder, { recursive: true, force: true });
      removed.push(folder);
      process.emitWarning(`${operation}: removed ${folder}, the ${kind} folder of a restore that did not finish (left by ${why})`, { code: 'STRATA_LEFTOVER' });
    } catch (err) {
      process.emitWarning(`${operation}: could not remove ${folder}, left by ${why}: ${(err as Error).message}`, { code: 'STRATA_LEFTOVER' });
    }
  }
  return removed;
}
