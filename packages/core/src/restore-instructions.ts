import { readFile } from 'node:fs/promises';
import type { BackupRecord, SegmentRecord } from './catalog.js';
import type { HandRecovery } from './engine.js';
import { shellQuote } from './shell-quote.js';
import { STRATA_VERSION } from './version.js';

/** The file name RESTORE.md's commands write the recovery script to. */
const RECOVERY_SCRIPT = 'recover-chain.py';

/**
 * Writes the script out of RESTORE.md's appendix (its only ```python block). The script rides
 * inside RESTORE.md rather than as a file of its own because importers skip RESTORE.md, while
 * one that knows no such file would refuse the whole export.
 */
const WRITE_SCRIPT = `awk '/^\`\`\`python$/ { on = 1; next } /^\`\`\`$/ { on = 0 } on' RESTORE.md > ${RECOVERY_SCRIPT}`;

/** The file name RESTORE.md's commands write the segment replay script to, and its appendix's fence. */
const REPLAY_SCRIPT = 'replay-segments.py';
const REPLAY_FENCE = '```python replay-segments.py';
const WRITE_REPLAY_SCRIPT = `awk '/^${REPLAY_FENCE}$/ { on = 1; next } /^\`\`\`$/ { on = 0 } on' RESTORE.md > ${REPLAY_SCRIPT}`;

/** docs/replay-segments.py, when this program has it (as {@link recoveryScript}). */
export async function replayScript(): Promise<Buffer | undefined> {
  try {
    return await readFile(new URL('../../../docs/replay-segments.py', import.meta.url));
  } catch {
    return undefined;
  }
}

/**
 * docs/recover-chain.py of the Strata project, when this program runs from a checkout or a
 * package that ships it; undefined otherwise (RESTORE.md then says where to get it).
 */
export async function recoveryScript(): Promise<Buffer | undefined> {
  try {
    return await readFile(new URL('../../../docs/recover-chain.py', import.meta.url));
  } catch {
    return undefined;
  }
}

export interface RestoreInstructionsInput {
  /** Per database, its newest good restore point. */
  readonly tips: readonly BackupRecord[];
  /** Every backup in the export (the tips' chains). */
  readonly backups: readonly BackupRecord[];
  /** The export file as the user named it. */
  readonly exportFile: string;
  /** docs/recover-chain.py, appended to RESTORE.md when this program has it. */
  readonly script: Buffer | undefined;
  readonly handRecovery: (engine: string) => HandRecovery | undefined;
  /** The export carries key files (keys/*.asc): artifacts open with data keys, which they hold. */
  readonly keyFiles?: boolean;
  /** How many archived log files (a server's write-ahead log) the export carries for its base backups. */
  readonly logFiles?: number;
  /** The segments of continuous protection the export carries. */
  readonly segments?: readonly SegmentRecord[];
  /** docs/replay-segments.py, appended when this program has it and the export carries segments. */
  readonly replayScript?: Buffer | undefined;
}

/**
 * Decrypts the first key file in keys/ that PASSFILE opens into KEYS (docs/FORMAT.md,
 * "recover-data-keys"); gpg reads the passphrase from the file, never from a command line.
 */
const OPEN_KEY_FILE = [
  'umask 077',
  'for KEYFILE in keys/*.asc; do',
  '  gpg --batch --quiet --pinentry-mode loopback --passphrase-file PASSFILE --decrypt "$KEYFILE" > KEYS 2>/dev/null && break',
  '  rm -f KEYS',
  'done',
  "test -s KEYS || { echo 'PASSFILE opens none of the key files in keys/' >&2; exit 1; }",
];

/** RESTORE.md of an export: for each database, the exact commands, with Strata and without it. */
export function restoreInstructions(input: RestoreInstructionsInput): string {
  const file = input.exportFile.split(/[\\/]/).pop()!;
  const extract = /\.zip$/i.test(file) ? `unzip ${shellQuote(file)}` : `tar -xzf ${shellQuote(file)}`;
  // A script with a fence line of its own would end the appendix early: then point to the docs.
  const script = input.script && !/^```/m.test(input.script.toString('utf8')) ? input.script.toString('utf8') : undefined;
  const segments = input.segments ?? [];
  const replay = segments.length > 0 && input.replayScript && !/^```/m.test(input.replayScript.toString('utf8')) ? input.replayScript.toString('utf8') : undefined;
  const encrypted = input.backups.some((b) => b.encryption.profile !== 'none');
  const clients = [...new Set(input.tips.flatMap((t) => input.handRecovery(t.engine)?.tools ?? []))];
  const lines = [
    '# Restoring from this export',
    '',
    `Made ${new Date().toISOString()} by Strata. Each database's newest good restore point is here with every backup it needs.`,
    `The artifacts are exactly as in the repository${encrypted ? (input.keyFiles ? ', encrypted with its data keys; the key files in keys/ hold those keys, sealed with the passphrases of the repository' : ', encrypted with its passphrase') : ''}.`,
    '',
    '## With Strata',
    '',
    '```sh',
    ...(encrypted
      ? [
          input.keyFiles
            ? 'export STRATA_PASSPHRASE=...        # a passphrase of the repository this came from (it opens one of the key files in keys/)'
            : 'export STRATA_PASSPHRASE=...        # the passphrase of the repository this came from',
        ]
      : []),
    `strata init --repo ./restored-repo${encrypted ? `  # once (use the same passphrase${input.keyFiles ? '; import adds the data keys to its key file' : ''})` : ' --no-encryption'}`,
    `strata import ${shellQuote(file)} --repo ./restored-repo`,
    ...input.tips.map((t) => `strata restore ${t.id} --repo ./restored-repo --to ${shellQuote(input.handRecovery(t.engine)?.exampleTarget(t.database) ?? t.database)}`),
    '```',
    '',
    '## Without Strata',
    '',
    'You need Python 3 (3.8 or newer; on every Debian, Ubuntu and macOS system), ' +
      `${encrypted ? 'gpg, ' : ''}zstd or gzip${clients.length > 0 ? `, and ${clients.join(', ')}` : ''}.`,
    script
      ? `${RECOVERY_SCRIPT} (docs/recover-chain.py of the Strata project, at the end of this file; the commands below write it out) assembles any restore point (full, differential or incremental) from its chain`
      : `${RECOVERY_SCRIPT} (docs/recover-chain.py of the Strata project: put it in that folder) assembles any restore point (full, differential or incremental) from its chain`,
    'and checks every chunk and stream against the manifests; docs/FORMAT.md of the Strata project explains every step.',
    ...(encrypted
      ? [
          input.keyFiles
            ? 'Put your passphrase (one that opens a key file in keys/) in a file only you can read; PASSFILE below is that file. The commands write the data keys it opens to KEYS (keep it as secret as the passphrase).'
            : 'Put the passphrase in a file only you can read; PASSFILE below is that file.',
        ]
      : []),
    'Run the commands in the folder where you extract the export:',
    '',
    '```sh',
    extract,
    ...(script ? [WRITE_SCRIPT] : []),
    ...(replay ? [WRITE_REPLAY_SCRIPT] : []),
    ...(encrypted && input.keyFiles ? OPEN_KEY_FILE : []),
    '```',
    '',
  ];
  for (const tip of input.tips) {
    const chain = chainOf(tip, input.backups);
    const recovery = input.handRecovery(tip.engine);
    lines.push(`### ${tip.database} (${tip.engine})`, '');
    lines.push(`Newest restore point: ${tip.id} (${tip.type}, ${tip.createdAt}).`);
    lines.push(`Its chain: ${chain.map((b) => `${b.id} (${b.type})`).join(' → ')}.`, '');
    lines.push('```sh');
    lines.push(`OUT=${shellQuote(`out-${tip.database}`)} NEWDB=${shellQuote(tip.database)}`);
    const key = encrypted ? (input.keyFiles ? ' --keys KEYS' : ' --passphrase-file PASSFILE') : '';
    lines.push(`python3 ${RECOVERY_SCRIPT}${key} --out "$OUT" ${chain.map((b) => shellQuote(b.key)).join(' ')}`);
    if (recovery) lines.push(...recovery.loadCommands);
    else lines.push(`# then load "$OUT" as docs/FORMAT.md says for ${tip.engine}`);
    lines.push('```', '');
    lines.push(...replayInstructions(tip, input, key, replay !== undefined));
    if (tip.logRange && (input.logFiles ?? 0) > 0) {
      lines.push(
        `Its archived log is in backups/${tip.database}/log/ (one file per file the server archived, named \`{name}_{SHA-256}_{data key}.zst.gpg\`: decrypted and decompressed, each is the file whose SHA-256 its name carries).`,
        recovery?.logArchive ?? 'docs/FORMAT.md of the Strata project ("The log archive") says how a recovery reads it.',
        '',
      );
    }
  }
  if (script) {
    lines.push(`## Appendix: ${RECOVERY_SCRIPT}`, '', `docs/recover-chain.py of Strata ${STRATA_VERSION}.`, '', '```python', script.trimEnd(), '```', '');
  }
  if (replay) {
    lines.push(`## Appendix: ${REPLAY_SCRIPT}`, '', `docs/replay-segments.py of Strata ${STRATA_VERSION}.`, '', REPLAY_FENCE, replay.trimEnd(), '```', '');
  }
  return lines.join('\n');
}

/**
 * For a database whose export carries segments: how to restore it as of a moment after their base,
 * with Strata and by hand (recover the base's chain, then replay-segments.py up to the moment).
 */
function replayInstructions(tip: BackupRecord, input: RestoreInstructionsInput, keyArgument: string, haveScript: boolean): string[] {
  const mine = (input.segments ?? []).filter((s) => s.database === tip.database);
  if (mine.length === 0) return [];
  // The base the newest change follows: a restore as of a late moment starts there.
  const newest = mine.reduce((a, b) => (b.lastAt > a.lastAt ? b : a));
  const base = input.backups.find((b) => b.id === newest.base);
  if (!base) return [];
  const after = mine.filter((s) => s.base === base.id);
  const first = after.reduce((a, b) => (b.firstAt < a.firstAt ? b : a)).firstAt;
  const recovery = input.handRecovery(tip.engine);
  const lines = [
    `#### ${tip.database} as of a moment`,
    '',
    `${after.length} segment(s) of continuous protection follow ${base.id}: its transactions committed from ${first} to ${newest.lastAt} (backups/${tip.database}/segments/).`,
    `With Strata: \`strata restore --db ${tip.database} --as-of 2026-01-02T12:00:00Z --repo ./restored-repo --to ${shellQuote(recovery?.exampleTarget(tip.database) ?? tip.database)}\` (any moment in that window).`,
  ];
  if (!recovery?.replayCommands) return [...lines, `By hand: docs/FORMAT.md of the Strata project ("Restoring to a moment by hand").`, ''];
  lines.push(
    `By hand: recover ${base.id} and replay the segments up to the moment (UNTIL, UTC) with ${REPLAY_SCRIPT}${haveScript ? ' (appendix; written out above)' : ' (docs/replay-segments.py of the Strata project: put it in that folder)'}, which checks that they form one chain and each one's changes against its SHA-256:`,
    '',
    '```sh',
    `OUT=${shellQuote(`out-${tip.database}-${base.id}`)} NEWDB=${shellQuote(`${tip.database}-as-of`)} BASE=${shellQuote(base.id)} UNTIL=${shellQuote(newest.lastAt)}`,
    `python3 ${RECOVERY_SCRIPT}${keyArgument} --out "$OUT" ${chainOf(base, input.backups).map((b) => shellQuote(b.key)).join(' ')}`,
    ...recovery.replayCommands(keyArgument.trim(), `backups/${tip.database}/segments/*`),
    '```',
    '',
  );
  return lines;
}

/** The tip's chain, oldest first, from the backups of the export. */
function chainOf(tip: BackupRecord, backups: readonly BackupRecord[]): BackupRecord[] {
  const chain: BackupRecord[] = [];
  for (let at: BackupRecord | undefined = tip; at; at = at.parent ? backups.find((b) => b.id === at!.parent) : undefined) chain.unshift(at);
  return chain;
}
