// A tiny event emitter that works the same in browsers and Node (no `node:events`).
//
// A listener that throws must neither break the SDK's state machine halfway through an
// update nor vanish: the exception is rethrown on a fresh task, where the host reports it
// as an uncaught error like any other bug in app code.

export class Emitter {
  #listeners = new Map();

  /** Adds a listener; returns a function that removes it. */
  on(event, listener) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Adds a listener called at most once. */
  once(event, listener) {
    const off = this.on(event, (...args) => {
      off();
      listener(...args);
    });
    return off;
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  /** Number of listeners of `event` (used to decide whether an `error` would be lost). */
  listenerCount(event) {
    return this.#listeners.get(event)?.size ?? 0;
  }

  /** Calls every listener of `event` in order; returns whether there was any. */
  emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (!set || set.size === 0) return false;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
    return true;
  }

  removeAllListeners() {
    this.#listeners.clear();
  }
}
