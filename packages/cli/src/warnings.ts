/**
 * What Strata warned of while this command ran: the process warnings engines and the repository
 * emit with a `STRATA_` code (a table restore that left out what a trigger uses, a backup that
 * cannot be restored). They are printed on stderr as they come; a command's `--json` output
 * carries them too, where a script that reads only stdout finds them.
 */
export interface SaidWarning {
  readonly code: string;
  readonly message: string;
}

const said: SaidWarning[] = [];
/** More are not kept: a command that runs for days (replicate) must not grow without end. */
const KEPT_WARNINGS = 100;

export function noteWarning(warning: SaidWarning): void {
  if (said.length >= KEPT_WARNINGS || said.some((w) => w.code === warning.code && w.message === warning.message)) return;
  said.push(warning);
}

export function warningsSaid(): readonly SaidWarning[] {
  return said;
}
