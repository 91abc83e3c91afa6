/** Exponential backoff with full jitter (AWS architecture blog): a random delay in [0, min(max, base·2ⁿ)). */
export interface BackoffOptions {
  /** The first retry's ceiling, in ms (default 500). */
  baseMs?: number;
  /** The largest ceiling, in ms (default 20,000). */
  maxMs?: number;
  /** The random source, for tests (default Math.random). */
  random?: () => number;
}

export class Backoff {
  readonly baseMs: number;
  readonly maxMs: number;
  private readonly random: () => number;
  /** Failed attempts since the last success. */
  attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = Math.max(1, options.baseMs ?? 500);
    this.maxMs = Math.max(this.baseMs, options.maxMs ?? 20_000);
    this.random = options.random ?? Math.random;
  }

  /** The ceiling of the next delay. */
  ceiling(): number {
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
  }

  /** The next delay (and count the attempt); never below `atLeastMs` (a server's retry_after_ms). */
  next(atLeastMs = 0): number {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempt++;
    // A server's retry_after_ms wins over the jitter (bounded, in case of a nonsensical value).
    return Math.max(delay, Math.min(atLeastMs, 300_000));
  }

  reset(): void {
    this.attempt = 0;
  }
}
