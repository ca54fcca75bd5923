/**
 * One word for a POSIX shell (sh, bash, zsh): returned as it is when it holds only characters no
 * shell treats specially, otherwise in single quotes, inside which nothing is special (`$(...)`,
 * backticks, `!`, spaces), with each embedded single quote closed, escaped and reopened. Commands
 * Strata prints for people to paste (the undo of `strata run`, RESTORE.md) go through this, so a
 * path or URL can never run anything when pasted.
 */
export function shellQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** A whole command line of {@link shellQuote}d words. */
export function shellCommand(words: readonly string[]): string {
  return words.map(shellQuote).join(' ');
}
