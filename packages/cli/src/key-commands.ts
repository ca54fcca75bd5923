import { StrataError, describeKeyUse, isStrataError, passphraseFromFile } from '@strata/sdk';
import type { KeyFileInfo, KeyListing, Passphrase } from '@strata/sdk';
import type { CommandContext } from './context.js';
import { checkPassphraseFileSeals, interactive, passphraseGiven, printable, readPassphrase } from './terminal.js';
import { printTable } from './table.js';

/** Options of `strata key <action>`. */
export interface KeyCommandOptions {
  readonly action: KeyAction;
  /** The key file id, for `remove`. */
  readonly id?: string;
  readonly label?: string;
  readonly force: boolean;
  readonly newPassphraseFile?: string;
  readonly newPassphraseCommand?: string;
  readonly alsoPassphraseFiles: readonly string[];
}

/** The actions; which exist, and which options each takes, the command table (command-table.ts) says. */
export type KeyAction = 'list' | 'add' | 'remove' | 'passwd' | 'rotate' | 'migrate';

/** `strata key list|add|remove|passwd|rotate|migrate`. */
export async function keyCommand(ctx: CommandContext, options: KeyCommandOptions): Promise<number> {
  const action = options.action;
  if (action === 'remove' && options.id === undefined) throw new StrataError('USAGE', 'key remove: name the key file to remove (its id, from strata key list)');
  switch (action) {
    case 'list':
      return listKeys(ctx);
    case 'add':
      return addKey(ctx, options);
    case 'remove':
      return removeKey(ctx, options.id!, options.force);
    case 'passwd':
      return changePassphrase(ctx, options);
    case 'rotate':
      return rotateKey(ctx, options);
    default:
      return migrateKeys(ctx, options);
  }
}

function describe(file: KeyFileInfo): string {
  return file.label ? `${file.id} (${printable(JSON.stringify(file.label))})` : file.id;
}

function when(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/** The passphrase to add: from --new-passphrase-file/-command, STRATA_NEW_PASSPHRASE*, or asked twice. Never from argv. */
async function newPassphrase(ctx: CommandContext, options: KeyCommandOptions, action: string): Promise<Passphrase> {
  const passphrase = await readPassphrase({
    ...(options.newPassphraseFile !== undefined ? { passphraseFile: options.newPassphraseFile } : {}),
    ...(options.newPassphraseCommand !== undefined ? { passphraseCommand: options.newPassphraseCommand } : {}),
    prompt: interactive(ctx.json),
    confirm: true,
    which: 'new',
  });
  if (!passphrase) {
    throw new StrataError('USAGE', `key ${action}: give the new passphrase with --new-passphrase-file FILE, --new-passphrase-command CMD or STRATA_NEW_PASSPHRASE, or run on a terminal to be asked`);
  }
  return passphrase;
}

async function listKeys(ctx: CommandContext): Promise<number> {
  const repo = await ctx.repository();
  // Which key file is yours needs the passphrase; the list itself does not, so it is never asked for.
  if (passphraseGiven(ctx.passphraseSources(false))) {
    try {
      await repo.unlock();
    } catch (err) {
      // A passphrase meant for another repository (a STRATA_PASSPHRASE left set) must not stop a listing that needs none.
      if (isStrataError(err, 'PASSPHRASE_WRONG')) process.stderr.write(`strata: warning: ${err.message}; listed without marking the key file it opens\n`);
      else if (!isStrataError(err, 'PASSPHRASE_MISSING')) throw err;
    }
  }
  const listing = await repo.keys.list();
  if (ctx.json) {
    ctx.printJson(listing);
    return 0;
  }
  if (listing.encryption === 'none') {
    process.stdout.write('the repository is not encrypted, so it has no keys\n');
    return 0;
  }
  if (!listing.keyed) {
    process.stdout.write(
      'the repository is encrypted with its passphrase itself (it was made before key files).\n' +
        'Run `strata key migrate` to move it onto key files, so that passphrases can be added, changed and revoked.\n',
    );
    return 0;
  }
  process.stdout.write('Key files (each passphrase opens one):\n');
  printTable(
    ['ID', 'LABEL', 'CREATED', 'DATA KEYS', ''],
    listing.keyFiles.map((f) => [f.id, f.label ?? '-', when(f.createdAt), f.dataKeys.map((k) => (k === listing.currentKey ? `${k}*` : k)).join(' '), f.opened ? '← your passphrase' : '']),
  );
  process.stdout.write('\nData keys (* current: new backups are encrypted under it):\n');
  printTable(
    ['ID', 'CREATED', 'ORIGIN', 'NEEDED BY', 'HELD BY'],
    listing.dataKeys.map((k) => [`${k.id}${k.current ? '*' : ''}`, when(k.createdAt), k.legacy ? 'legacy (the old passphrase)' : k.origin, describeKeyUse(k) || 'nothing', k.heldBy.join(' ') || 'NO KEY FILE']),
  );
  printStale(listing);
  return 0;
}

/** Warns about key files that cannot make new backups, and says what to do. */
function printStale(listing: KeyListing): void {
  const stale = listing.keyFiles.filter((f) => !f.holdsCurrent);
  if (stale.length === 0) return;
  process.stdout.write(
    `\n${stale.length} key file(s) do not hold the current data key ${listing.currentKey}: ${stale.map(describe).join(', ')}.\n` +
      'Backups made with their passphrases fail (exit 4) until they do; backups made so far stay readable.\n' +
      'To fix one: run `strata key rotate --also-passphrase-file FILE` with its passphrase in FILE, or have its owner get a new key file\n' +
      '(`strata key add`, run by someone whose key file holds the current key) and then `strata key remove` the old one.\n',
  );
}

async function addKey(ctx: CommandContext, options: KeyCommandOptions): Promise<number> {
  const repo = await ctx.repository();
  await repo.unlock();
  const passphrase = await newPassphrase(ctx, options, 'add');
  const added = await repo.keys.add({ passphrase, ...(options.label !== undefined ? { label: options.label } : {}) });
  if (ctx.json) ctx.printJson({ added });
  else process.stdout.write(`added key file ${describe(added)}: its passphrase now opens the repository (data keys ${added.dataKeys.join(', ')})\n`);
  return 0;
}

async function removeKey(ctx: CommandContext, id: string, force: boolean): Promise<number> {
  const repo = await ctx.repository();
  await repo.unlock();
  const removed = await repo.keys.remove(id, { force });
  if (ctx.json) ctx.printJson({ removed });
  else if (removed.alreadyRemoved !== undefined) {
    process.stdout.write(`key file ${id} was already removed (at ${removed.alreadyRemoved}): its passphrase no longer opens the repository; nothing more to do\n`);
  } else {
    process.stdout.write(
      `removed key file ${describe(removed)}: its passphrase no longer opens the repository.\n` +
        'A copy of that key file with its passphrase (or the data keys read from it) still opens the backups made so far;\n' +
        'if it may have leaked, run `strata key rotate` so that new backups use a data key it never held.\n',
    );
  }
  return 0;
}

async function changePassphrase(ctx: CommandContext, options: KeyCommandOptions): Promise<number> {
  const repo = await ctx.repository();
  await repo.unlock();
  const passphrase = await newPassphrase(ctx, options, 'passwd');
  const { removed, added } = await repo.keys.passwd({ passphrase });
  if (ctx.json) ctx.printJson({ removed, added });
  else process.stdout.write(`changed the passphrase: key file ${describe(added)} replaces ${removed.id}; the old passphrase no longer opens the repository\n`);
  return 0;
}

async function rotateKey(ctx: CommandContext, options: KeyCommandOptions): Promise<number> {
  const repo = await ctx.repository();
  await repo.unlock();
  const alsoPassphrases = options.alsoPassphraseFiles.map((file) => passphraseFromFile(file));
  const result = await repo.keys.rotate({ alsoPassphrases });
  if (ctx.json) {
    ctx.printJson(result);
    return 0;
  }
  process.stdout.write(`new current data key ${result.dataKey}, written to key file(s) ${result.updated.map(describe).join(', ')}; new backups are encrypted under it, and no backup was re-encrypted\n`);
  if (result.stale.length > 0) printStale(await repo.keys.list());
  return 0;
}

async function migrateKeys(ctx: CommandContext, options: KeyCommandOptions): Promise<number> {
  const repo = await ctx.repository();
  await repo.unlock();
  // The passphrase that opened the repository seals its first key file.
  checkPassphraseFileSeals(ctx.passphraseSources(false));
  const result = await repo.keys.migrate(options.label !== undefined ? { label: options.label } : {});
  if (ctx.json) ctx.printJson(result);
  else {
    process.stdout.write(
      `the repository now uses key files: key file ${describe(result.keyFile)} (your passphrase) holds the new current data key ${result.dataKey}\n` +
        `and, as data key ${result.legacyKey}, the passphrase itself, which the backups made so far need.\n` +
        'Every passphrase added from now on can read that old passphrase from its key file: do not use it anywhere else.\n' +
        'To stop using it as a passphrase, run `strata key passwd` now.\n',
    );
  }
  return 0;
}
