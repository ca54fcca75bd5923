import { execFile } from 'node:child_process';
import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import * as path from 'node:path';

/**
 * Where the Strata server comes from. The extension runs the installed command line,
 * `strata serve --stdio`: `npm install -g` built its database drivers (native addons) for the
 * user's Node, which the editor's own runtime (Electron, another ABI) cannot load.
 */
export interface ServerLaunch {
  /** The program to run and its arguments for the server, then for `--version`. */
  readonly command: string;
  readonly args: readonly string[];
  readonly versionArgs: readonly string[];
  /** Where it was found, for messages: `/usr/local/bin/strata (on PATH)`. */
  readonly description: string;
  /** A Windows npm shim (`strata.cmd`) runs only through the shell. */
  readonly shell: boolean;
}

export interface ServerSettings {
  /** `strata.cliPath`: the strata command. */
  readonly cliPath: string;
  /** `strata.server.nodePath`: the Node to run it with (empty: the command's own `#!` line). */
  readonly nodePath: string;
  /** `strata.server.path` (older setting): a strata command, or strata-server's main.js of a checkout. */
  readonly legacyServerPath: string;
}

/** Why no server could be started; `code` as the protocol's error codes are. */
export class ServerProblem extends Error {
  constructor(
    message: string,
    readonly code: 'SERVER_MISSING' | 'SERVER_INCOMPATIBLE' | 'SERVER_FAILED',
  ) {
    super(message);
    this.name = 'ServerProblem';
  }
}

const WINDOWS = process.platform === 'win32';
const EXECUTABLE_NAMES = WINDOWS ? ['strata.cmd', 'strata.exe', 'strata'] : ['strata'];

function isExecutableFile(file: string): boolean {
  try {
    if (!statSync(file).isFile()) return false;
    if (!WINDOWS) accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function inFolder(folder: string): string | undefined {
  for (const name of EXECUTABLE_NAMES) {
    const file = path.join(folder, name);
    if (isExecutableFile(file)) return file;
  }
  return undefined;
}

/**
 * Folders where `npm install -g` commonly puts commands, tried before asking npm (which takes
 * a second or more): an editor started from a desktop launcher often lacks the PATH a login
 * shell sets up (nvm, ~/.npm-global).
 */
function usualGlobalBins(env: NodeJS.ProcessEnv): string[] {
  const home = homedir();
  return [
    env['NVM_BIN'],
    env['npm_config_prefix'] && (WINDOWS ? env['npm_config_prefix'] : path.join(env['npm_config_prefix'], 'bin')),
    env['NPM_CONFIG_PREFIX'] && (WINDOWS ? env['NPM_CONFIG_PREFIX'] : path.join(env['NPM_CONFIG_PREFIX'], 'bin')),
    path.join(home, '.npm-global', 'bin'),
    path.join(home, '.local', 'bin'),
    path.join(home, '.volta', 'bin'),
    WINDOWS ? env['APPDATA'] && path.join(env['APPDATA'], 'npm') : '/usr/local/bin',
    WINDOWS ? undefined : '/opt/homebrew/bin',
  ].filter((dir): dir is string => typeof dir === 'string' && dir !== '');
}

let npmGlobalBin: Promise<string | undefined> | undefined;

/** npm's folder for global commands (`npm prefix -g`, asked once per session; slow, so last). */
function askNpmForGlobalBin(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  npmGlobalBin ??= new Promise((resolve) => {
    execFile('npm', ['prefix', '--global'], { env, timeout: 20_000, shell: WINDOWS, windowsHide: true }, (err, stdout) => {
      const prefix = stdout.trim();
      if (err || prefix === '') resolve(undefined);
      else resolve(WINDOWS ? prefix : path.join(prefix, 'bin'));
    });
  });
  return npmGlobalBin;
}

/** Where the strata command is: the setting, else PATH, else npm's global folder. */
export async function locateServer(settings: ServerSettings, env: NodeJS.ProcessEnv = process.env): Promise<ServerLaunch> {
  const configured = settings.cliPath || settings.legacyServerPath;
  const settingName = settings.cliPath ? 'strata.cliPath' : 'strata.server.path';
  if (configured) {
    const file = configured.replace(/^~(?=$|[\\/])/, homedir());
    if (!isExecutableFile(file) && !(file.endsWith('.js') && statSafe(file))) {
      throw new ServerProblem(`the Strata command line is not at ${configured} (setting ${settingName}): correct the setting, or clear it to use strata from PATH`, 'SERVER_MISSING');
    }
    // A checkout's packages/server/dist/main.js: strata-server itself (development).
    if (/[\\/]server[\\/]dist[\\/]main\.js$/.test(file)) {
      return { command: settings.nodePath || 'node', args: [file, '--stdio'], versionArgs: [file, '--version'], description: `${file} (setting ${settingName})`, shell: false };
    }
    return launchOf(file, settings.nodePath, `setting ${settingName}`);
  }
  const pathDirs = (env['PATH'] ?? env['Path'] ?? '').split(path.delimiter).filter((dir) => dir !== '');
  for (const dir of pathDirs) {
    const found = inFolder(dir);
    if (found) return launchOf(found, settings.nodePath, 'on PATH');
  }
  for (const dir of usualGlobalBins(env)) {
    const found = inFolder(dir);
    if (found) return launchOf(found, settings.nodePath, "in npm's global folder");
  }
  const npmBin = await askNpmForGlobalBin(env);
  const found = npmBin && inFolder(npmBin);
  if (found) return launchOf(found, settings.nodePath, "in npm's global folder");
  throw new ServerProblem(
    `the Strata command line (strata) was not found: strata.cliPath is not set, and it is neither on PATH nor in npm's global folder${npmBin ? ` (${npmBin})` : ''}. Install it (How to Install), or set its path`,
    'SERVER_MISSING',
  );
}

function statSafe(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function launchOf(executable: string, nodePath: string, where: string): ServerLaunch {
  const description = `${executable} (${where})`;
  // With strata.server.nodePath the script behind npm's link runs under that Node; a Windows
  // .cmd shim has no script path to give, so it runs as it is.
  const script = nodePath && !/\.(cmd|exe)$/i.test(executable) ? realpathSync(executable) : undefined;
  if (script) return { command: nodePath, args: [script, 'serve', '--stdio'], versionArgs: [script, '--version'], description: `${description} with ${nodePath}`, shell: false };
  const shell = WINDOWS && /\.cmd$/i.test(executable);
  return { command: executable, args: ['serve', '--stdio'], versionArgs: ['--version'], description, shell };
}

/** What `--version` printed: `0.1.0`, or strata-server's `0.1.0 (protocol 1)`. */
export function runVersion(launch: ServerLaunch, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(launch.command, [...launch.versionArgs], { env, timeout: 30_000, shell: launch.shell, windowsHide: true }, (err, stdout, stderr) => {
      if (err) {
        const why = stderr.trim() || (err as NodeJS.ErrnoException).code || err.message;
        reject(new ServerProblem(`${launch.description} did not run (${why}): reinstall it, or check strata.server.nodePath`, 'SERVER_FAILED'));
      } else resolve(stdout.trim());
    });
  });
}

/**
 * Whether a strata version works with this extension: the same release line (the same major
 * version; for 0.x, the same minor, as npm's caret ranges treat them).
 */
export function isCompatible(cliVersion: string, extensionVersion: string): boolean {
  const parse = (v: string): number[] | undefined => /^(\d+)\.(\d+)\.(\d+)/.exec(v)?.slice(1).map(Number);
  const cli = parse(cliVersion);
  const ext = parse(extensionVersion);
  if (!cli || !ext) return false;
  return cli[0] === ext[0] && (ext[0] !== 0 || cli[1] === ext[1]);
}
