// Reconnect delays: exponential backoff with "full jitter" (a uniformly random delay between
// 0 and the exponential ceiling), which spreads a crowd of clients that lost the same server
// over the whole window instead of having them knock again in lockstep.
// See https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/

export const DEFAULT_BACKOFF = Object.freeze({
  /** First ceiling (ms). */
  baseMs: 1000,
  /** Largest ceiling (ms). */
  capMs: 30000,
  /** Growth of the ceiling per attempt. */
  factor: 2,
  /** Attempts before giving up (status `disconnected`); Infinity never gives up. */
  maxAttempts: Infinity,
});

export class Backoff {
  /**
   * @param {Partial<typeof DEFAULT_BACKOFF>} [options]
   * @param {() => number} [random] a [0, 1) source; tests pass a fixed one
   */
  constructor(options = {}, random = Math.random) {
    this.options = { ...DEFAULT_BACKOFF, ...options };
    this.random = random;
    this.attempt = 0;
  }

  /** The ceiling of the current attempt, before jitter. */
  ceiling() {
    const { baseMs, capMs, factor } = this.options;
    // Clamp the exponent so that a long outage cannot overflow to Infinity/NaN.
    return Math.min(capMs, baseMs * factor ** Math.min(this.attempt, 64));
  }

  /** The delay before the next attempt, or null when the attempts are used up. */
  next() {
    if (this.attempt >= this.options.maxAttempts) return null;
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempt += 1;
    return delay;
  }

  reset() {
    this.attempt = 0;
  }
}
