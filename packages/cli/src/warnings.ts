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

export function noteWarning(warning: SaidWarning): void {
  said.push(warning);
}

export function warningsSaid(): readonly SaidWarning[] {
  return said;
}
