import cliProgress from 'cli-progress';
import { onInterrupt } from './signals.js';

/** Progress of a long job: a live bar on a terminal, a line every tenth of the way otherwise. */
export class Progress {
  private readonly bar?: cliProgress.SingleBar;
  private readonly start = performance.now();
  private lastLine = -1;
  private stopped?: number;
  /** An interrupt stops the bar, which gives the terminal back its cursor and line wrapping. */
  private readonly forget: () => void = () => undefined;

  /** `first`: steps already done before this run (a resumed run counts from there). */
  constructor(private readonly total: number, private readonly unit: string, private readonly quiet = false, private readonly first = 0) {
    if (!quiet && process.stderr.isTTY) {
      this.bar = new cliProgress.SingleBar({
        format: `step {value}/{total} |{bar}| {extra} | {rate} ${unit}/s | ETA {eta_formatted}`,
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 20,
      }, cliProgress.Presets.shades_classic);
      this.bar.start(total, first, { extra: '', rate: '—' });
      this.forget = onInterrupt(() => void this.stop());
    }
  }

  /** `done` steps finished, `items` processed so far (samples), `extra` the step's figures. */
  update(done: number, items: number, extra: string): void {
    const secs = (performance.now() - this.start) / 1000;
    const rate = secs > 0 ? (items / secs).toFixed(1) : '—';
    if (this.bar) this.bar.update(done, { extra, rate });
    else if (!this.quiet) {
      const tenth = Math.floor((10 * done) / this.total);
      if (tenth !== this.lastLine || done === this.first + 1) {
        this.lastLine = tenth;
        const ran = done - this.first;
        const eta = ran ? ((this.total - done) * secs) / ran : 0;
        process.stdout.write(`step ${String(done).padStart(String(this.total).length)}/${this.total}  ${extra}  ${rate} ${this.unit}/s  ETA ${eta.toFixed(1)} s\n`);
      }
    }
  }

  /** Ends the bar (once) and returns the seconds since the job started. */
  stop(): number {
    if (this.stopped === undefined) {
      this.bar?.stop();
      this.forget();
      this.stopped = (performance.now() - this.start) / 1000;
    }
    return this.stopped;
  }
}
