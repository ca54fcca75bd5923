import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { COMMANDS, GLOBAL_OPTIONS, GROUPS } from '@strata/cli/command-table';
import { REPOSITORY_LOCATIONS } from '@strata/cli/locations';
import { configJsonSchema, createDefaultEngines } from '@strata/sdk';
import { CLI, ROOT, json, strata, useTempDir } from './helpers/env.js';

/** The long flag of an option spec: `-y, --yes` → `--yes`, `--to <target>` → `--to`. */
function longFlag(flags: string): string {
  return flags.match(/--[a-z-]+/)![0];
}

function engineDisplays() {
  const registry = createDefaultEngines();
  return registry.kinds().map((kind) => registry.get(kind)!.display);
}

describe('strata command line: help and usage errors', () => {
  const dir = useTempDir();

  // Iterating the table itself: a command added to it cannot go without help.
  for (const spec of COMMANDS) {
    it(`strata ${spec.path.join(' ')} --help shows its options and an example`, () => {
      const result = strata([...spec.path, '--help']);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(result.stderr, '');
      assert.match(result.stdout, new RegExp(`^Usage: strata ${spec.path.join(' ')} `));
      for (const option of [...spec.options, ...GLOBAL_OPTIONS]) assert.ok(result.stdout.includes(longFlag(option.flags)), `${longFlag(option.flags)} in ${spec.path.join(' ')} --help`);
      assert.ok(spec.examples.length > 0);
      assert.match(result.stdout, /Examples:/);
      for (const example of spec.examples) assert.ok(result.stdout.includes(`$ strata ${example}`), example);
    });
  }

  for (const group of GROUPS) {
    it(`strata ${group.name} --help lists its subcommands with an example`, () => {
      const result = strata([group.name, '--help']);
      assert.equal(result.status, 0, result.stderr);
      for (const spec of COMMANDS.filter((c) => c.path[0] === group.name)) assert.match(result.stdout, new RegExp(`^  ${spec.path[1]}\\b`, 'm'));
      assert.match(result.stdout, /Examples:\n {2}\$ strata /);
    });
  }

  it('strata --help lists every command and names every URL scheme of every engine and the repository locations', () => {
    const result = strata(['--help']);
    assert.equal(result.status, 0);
    for (const spec of COMMANDS) assert.match(result.stdout, new RegExp(`^  ${spec.path[0]}\\b`, 'm'), spec.path[0]);
    const displays = engineDisplays();
    assert.ok(displays.length >= 3);
    for (const display of displays) {
      assert.ok(result.stdout.includes(display.name), display.name);
      for (const scheme of display.schemes) assert.ok(result.stdout.includes(`${scheme}:`), scheme);
    }
    for (const location of REPOSITORY_LOCATIONS) assert.ok(result.stdout.includes(location.description), location.description);
  });

  it('help piped into a reader that stops early (| head -1) ends quietly with status 0', () => {
    // The whole help is longer than a pipe takes at once, so strata is still writing when head exits.
    const result = spawnSync('bash', ['-c', `set -o pipefail; for i in 1 2 3; do "${process.execPath}" "${CLI}" --help; done | head -1`], { encoding: 'utf8' });
    assert.equal(result.stdout, 'Usage: strata <command> [options]\n');
    assert.equal(result.stderr, '', 'no EPIPE stack trace');
    assert.equal(result.status, 0);
  });

  it('an unknown option is a usage error (exit 2) that suggests the option meant', () => {
    const result = strata(['list', '--repoo', dir.path]);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /^strata: list: unknown option --repoo; did you mean --repo\? \(see strata list --help\)\n$/);
    const keyOption = strata(['key', 'rotate', '--also-pasphrase-file', 'x']);
    assert.equal(keyOption.status, 2);
    assert.match(keyOption.stderr, /key rotate: unknown option --also-pasphrase-file; did you mean --also-passphrase-file\?/);
  });

  it('an unknown option with --json is the usage error as the JSON document', () => {
    const result = strata(['restore', '--dbb', 'app', '--json']);
    assert.equal(result.status, 2);
    const out = json<{ error: { code: string; message: string; exitCode: number } }>(result);
    assert.equal(out.error.code, 'USAGE');
    assert.equal(out.error.exitCode, 2);
    assert.match(out.error.message, /did you mean --db\?/);
  });

  it('an unknown command or subcommand is a usage error that suggests the one meant', () => {
    const command = strata(['bakup', 'app']);
    assert.equal(command.status, 2);
    assert.match(command.stderr, /unknown command bakup; did you mean backup\?/);
    const sub = strata(['key', 'rotat']);
    assert.equal(sub.status, 2);
    assert.match(sub.stderr, /key: unknown command rotat; did you mean rotate\?/);
    const far = strata(['frobnicate']);
    assert.equal(far.status, 2);
    assert.match(far.stderr, /unknown command frobnicate \(see strata --help\)/);
    const help = strata(['help', 'nosuch']);
    assert.equal(help.status, 2);
    assert.equal(help.stderr, 'strata: help: there is no command "nosuch" (see strata --help for the commands)\n');
  });

  it('an option that took another flag as its value (an empty shell variable before it) is a usage error, and nothing runs', () => {
    const repo = path.join(dir.path, 'flag-as-value');
    const result = strata(['init', '--repo', repo, '--no-encryption', '--compression', '--json']);
    assert.equal(result.status, 2, result.stdout);
    assert.equal(json<{ error: { code: string; message: string } }>(result).error.message, 'init: --compression took --json as its value; give --compression a value, or leave it out (a value that starts with -- goes as --compression=VALUE)');
    assert.equal(existsSync(repo), false, 'no repository was made');
  });

  it('the committed JSON schema of strata.config.json is the one the SDK generates', () => {
    const committed = readFileSync(path.join(ROOT, 'extension/schemas/strata.config.schema.json'), 'utf8');
    assert.equal(committed, JSON.stringify(configJsonSchema(engineDisplays()), null, 2) + '\n', 'run node extension/schemas/generate.mjs');
  });
});
