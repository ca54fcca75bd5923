import { Argument, Command, CommanderError, Help, Option } from 'commander';
import type { OutputConfiguration } from 'commander';
import { STRATA_VERSION, StrataError } from '@strata/sdk';
import { COMMANDS, GLOBAL_OPTIONS, GROUPS, parseNumber, topLevelDetails } from './command-table.js';
import type { ArgumentSpec, CommandSpec, OptionSpec } from './command-table.js';
import type { CommandContext, GlobalOptions } from './context.js';

const EVERY_COMMAND = 'Options for every command:';

/** The command line, built: parse and run, the top-level help, and clean-up. */
export interface ProgramRun {
  /** Parses `argv` (after `strata`) and runs the command; a usage error throws a StrataError('USAGE'). */
  parse(argv: readonly string[], signal: AbortSignal): Promise<number>;
  /** `strata --help`. */
  helpText(): string;
  /** Closes the repository a command opened. */
  close(): Promise<void>;
}

function argumentTerm(arg: ArgumentSpec): string {
  const inner = `${arg.name}${arg.variadic ? '...' : ''}`;
  return `${arg.afterDoubleDash ? '-- ' : ''}${arg.required ? `<${inner}>` : `[${inner}]`}`;
}

function addOption(cmd: Command, spec: OptionSpec, group?: string): void {
  const option = new Option(spec.flags, spec.description);
  if (spec.repeatable) option.argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value]);
  if (group) option.helpGroup(group);
  cmd.addOption(option);
}

function examplesText(spec: CommandSpec): string {
  return `\nExamples:\n${spec.examples.map((e) => `  $ strata ${e}`).join('\n')}\n`;
}

/** commander's message, as Strata words usage errors: `list: unknown option --bogus; did you mean --by-tier?`. */
function usageMessage(where: string, err: CommanderError): string {
  const [first, ...rest] = err.message.replace(/^error: /, '').split('\n');
  const suggestion = rest.join(' ').match(/\(Did you mean (.+)\?\)/);
  const text = (first ?? '').replace(/'([^']*)'/g, '$1').replace(/\.$/, '');
  return `${where ? `${where}: ` : ''}${text}${suggestion ? `; did you mean ${suggestion[1]}?` : ''} (see strata ${where ? `${where} ` : ''}--help)`;
}

/**
 * A long term (`key list|add|remove|passwd|rotate|migrate`) goes on a line of its own instead of
 * pushing every description so far right that none of them can be wrapped.
 */
const READABLE_ITEMS: Partial<Help> = {
  padWidth(this: Help, cmd: Command, helper: Help): number {
    return Math.min(Help.prototype.padWidth.call(this, cmd, helper), 28);
  },
  formatItem(this: Help, term: string, termWidth: number, description: string, helper: Help): string {
    if (term.length <= termWidth) return Help.prototype.formatItem.call(this, term, termWidth, description, helper);
    return `  ${term}\n${Help.prototype.formatItem.call(this, '', termWidth, description, helper)}`;
  },
};

/** Options as commander would list them, for the top-level help (where they are not options of its own). */
function formatOptionList(options: readonly OptionSpec[]): string {
  const help = Object.assign(new Help(), READABLE_ITEMS);
  help.helpWidth = process.stdout.columns || 80;
  const width = Math.min(Math.max(...options.map((o) => o.flags.length)), 28);
  return options.map((o) => help.formatItem(o.flags, width, o.description, help)).join('\n');
}

/** Builds the `strata` command line from the command table. */
export function buildProgram(): ProgramRun {
  let ctx: CommandContext | undefined;
  let status = 0;
  let failedIn = '';
  let signal: AbortSignal = new AbortController().signal;
  let argvAfter: (path: readonly string[]) => string[] = () => [];

  const program = new Command('strata');
  const quiet = (where: string): OutputConfiguration => ({
    writeOut: (s: string) => process.stdout.write(s),
    // Errors are reported once, by main (on stderr, and as JSON with --json): commander stays silent.
    writeErr: () => undefined,
    outputError: () => {
      failedIn = where;
    },
  });
  const specs = new Map<Command, CommandSpec>();
  const helpConfig: Partial<Help> = {
    // The list of commands shows what a person types: `backup <db>`, `key list|add|...`.
    subcommandTerm(this: Help, cmd: Command): string {
      const spec = specs.get(cmd);
      const subs = cmd.commands.filter((c) => c.name() !== 'help').map((c) => c.name());
      if (subs.length > 0) return `${cmd.name()} ${subs.join('|')}`;
      if (!spec) return Help.prototype.subcommandTerm.call(this, cmd);
      return [cmd.name(), ...(spec.args ?? []).map(argumentTerm)].join(' ');
    },
    ...READABLE_ITEMS,
  };
  program
    .description(`strata ${STRATA_VERSION}: database backups you can prove`)
    .usage('<command> [options]')
    .version(STRATA_VERSION, '--version', 'print the version')
    .helpOption('-h, --help', 'show help (also: strata <command> --help)')
    .configureHelp(helpConfig)
    .configureOutput(quiet(''))
    .exitOverride()
    .showSuggestionAfterError(true);
  const topLevelAfter = (): string => `\n${EVERY_COMMAND}\n${formatOptionList(GLOBAL_OPTIONS)}\n\n${topLevelDetails()}\n`;
  program.addHelpText('after', topLevelAfter);

  const groups = new Map<string, Command>();
  const groupCommand = (name: string): Command => {
    const existing = groups.get(name);
    if (existing) return existing;
    const group = GROUPS.find((g) => g.name === name)!;
    const cmd = program
      .command(group.name)
      .summary(group.summary)
      .description(`${group.summary}\n\n${group.details}`)
      .configureHelp(helpConfig)
      .configureOutput(quiet(group.name))
      .exitOverride();
    cmd.addHelpText('after', `\nExamples:\n${COMMANDS.filter((c) => c.path[0] === name).map((c) => `  $ strata ${c.examples[0]}`).join('\n')}\n`);
    groups.set(group.name, cmd);
    return cmd;
  };

  for (const spec of COMMANDS) {
    const name = spec.path[spec.path.length - 1]!;
    const parent = spec.path.length > 1 ? groupCommand(spec.path[0]!) : program;
    const group = spec.path.length > 1 ? GROUPS.find((g) => g.name === spec.path[0]) : undefined;
    const where = spec.path.join(' ');
    const cmd = parent
      .command(name)
      .summary(spec.summary)
      .description(spec.summary)
      .configureOutput(quiet(where))
      .configureHelp(helpConfig)
      .exitOverride()
      // The action checks its own arguments, so the message says what is missing or extra.
      .allowExcessArguments(true);
    specs.set(cmd, spec);
    const args = spec.args ?? [];
    // Declared optional for commander and shown as required in the usage line: each action
    // refuses to run without what it needs, with a message that says what to give.
    for (const arg of args) cmd.addArgument(new Argument(`[${arg.name}${arg.variadic ? '...' : ''}]`));
    cmd.usage([...args.filter((a) => !a.afterDoubleDash).map(argumentTerm), '[options]', ...args.filter((a) => a.afterDoubleDash).map(argumentTerm)].join(' '));
    for (const option of spec.options) addOption(cmd, option);
    for (const option of GLOBAL_OPTIONS) addOption(cmd, option, EVERY_COMMAND);
    cmd.helpOption('-h, --help', 'show this help');
    cmd.addHelpText('after', () => {
      const details = [spec.details, group ? `About strata ${group.name}:\n${group.details}` : undefined].filter((d) => d !== undefined);
      return `${details.length > 0 ? `\n${details.join('\n\n')}\n` : ''}${examplesText(spec)}`;
    });
    cmd.action(async (...actionArgs: unknown[]) => {
      const self = actionArgs[actionArgs.length - 1] as Command;
      const operands = self.args;
      const declared = args.some((a) => a.variadic) ? Number.MAX_SAFE_INTEGER : args.length;
      if (operands.length > declared) throw new StrataError('USAGE', `${where}: unexpected argument ${JSON.stringify(operands[declared])}`);
      const opts = self.opts();
      refuseFlagsTakenAsValues(where, self);
      const global: GlobalOptions = {
        json: opts['json'] === true,
        ...(typeof opts['repo'] === 'string' ? { repo: opts['repo'] } : {}),
        ...(typeof opts['config'] === 'string' ? { config: opts['config'] } : {}),
        ...(typeof opts['passphraseFile'] === 'string' ? { passphraseFile: opts['passphraseFile'] } : {}),
        ...(typeof opts['passphraseCommand'] === 'string' ? { passphraseCommand: opts['passphraseCommand'] } : {}),
        ...(typeof opts['lockWait'] === 'string' ? { lockWait: parseNumber(opts['lockWait'], '--lock-wait')! } : {}),
      };
      // Loaded here: the repository, the engines' drivers and the config come with it, and help needs none of them.
      const { CommandContext } = await import('./context.js');
      ctx = new CommandContext(global);
      status = await spec.run(ctx, { args: operands, opts, argv: argvAfter(spec.path), signal });
    });
  }

  return {
    helpText: () => program.helpInformation() + topLevelAfter(),
    async parse(argv, abort) {
      signal = abort;
      argvAfter = (path) => argv.slice(path.length) as string[];
      try {
        await program.parseAsync(argv as string[], { from: 'user' });
        return status;
      } catch (err) {
        if (!(err instanceof CommanderError)) throw err;
        if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || (err.code === 'commander.help' && err.exitCode === 0)) return 0;
        // A group named without its subcommand (`strata key`); commander would print its help to stderr.
        const group = err.code === 'commander.help' ? groups.get(argv[0] ?? '') : undefined;
        if (group) {
          const actions = group.commands.filter((c) => c.name() !== 'help').map((c) => c.name());
          throw new StrataError('USAGE', `${group.name()}: name an action: ${actions.join(', ')} (see strata ${group.name()} --help)`);
        }
        // `strata help nosuch`: commander answers with its help on stderr and a token for a message.
        if (err.code === 'commander.help' && argv[0] === 'help' && argv[1] !== undefined) {
          throw new StrataError('USAGE', `help: there is no command ${JSON.stringify(argv.slice(1).join(' '))} (see strata --help for the commands)`);
        }
        throw new StrataError('USAGE', usageMessage(failedIn, err));
      }
    },
    close: async () => {
      await ctx?.close();
    },
  };
}

/**
 * Refuses an option whose value is another of the command's flags: `--label $L --json` with an
 * empty `$L` makes `--json` the label, and the run would go ahead without the JSON a script then
 * fails to parse. A value that really starts with `--` can still be given as `--label=--x`.
 */
function refuseFlagsTakenAsValues(where: string, cmd: Command): void {
  const flags = new Set(cmd.options.map((o) => o.long).filter((long): long is string => long !== undefined));
  const opts = cmd.opts();
  for (const option of cmd.options) {
    const value: unknown = opts[option.attributeName()];
    for (const item of Array.isArray(value) ? value : [value]) {
      if (typeof item === 'string' && flags.has(item)) {
        throw new StrataError('USAGE', `${where}: ${option.long} took ${item} as its value; give ${option.long} a value, or leave it out (a value that starts with -- goes as ${option.long}=VALUE)`);
      }
    }
  }
}
