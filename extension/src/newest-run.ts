/**
 * Runs of one refresh that may overlap (a timer, a file watcher, a command, a test): a run that
 * started earlier can end later, with what it found before a change. Each run is told whether a
 * newer one has started, so that only the newest shows its result, and every caller's promise
 * settles once the newest has.
 */
export class NewestRun {
  #runs = 0;
  #newest: Promise<void> = Promise.resolve();

  run(body: (superseded: () => boolean) => Promise<void>): Promise<void> {
    const run = ++this.#runs;
    this.#newest = body(() => run !== this.#runs);
    return this.#settled();
  }

  async #settled(): Promise<void> {
    for (;;) {
      const newest = this.#newest;
      try {
        await newest;
      } catch (err) {
        // An older run's failure is not the caller's: only the newest run's is.
        if (newest === this.#newest) throw err;
      }
      if (newest === this.#newest) return;
    }
  }
}
