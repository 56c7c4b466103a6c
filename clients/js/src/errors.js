// Every failure the SDK reports is a RosterError: server refusals keep the server's stable
// `code` and `message`; failures that happen on this side (a timeout, a lost connection, a
// full queue) get client codes so callers can branch on `error.code` alone.

/** Codes the server sends in `{ok: false, error: {code, message}}`. */
export const ServerErrorCodes = Object.freeze([
  "INVALID_PAYLOAD",
  "UNKNOWN_CONNECTION",
  "STALE_EPOCH",
  "UNAUTHORIZED",
  "FORBIDDEN",
  "RATE_LIMITED",
  "PAYLOAD_TOO_LARGE",
  "STORE_UNAVAILABLE",
  "COMPONENT_FAILED",
  "METADATA_CONFLICT",
  "METADATA_LOCK",
  "METADATA_INVALID",
]);

/** Codes this SDK makes up for failures the server never saw or could not answer. */
export const ClientErrorCodes = Object.freeze([
  "TIMEOUT", // no ack within the request timeout
  "DISCONNECTED", // the connection dropped before the ack, and the request is not safe to resend
  "QUEUE_OVERFLOW", // dropped from the outbound queue (oldest first) while disconnected
  "CLOSED", // the client (or the room, lock, subscription) was closed by the app
  "TRANSPORT", // the transport failed to connect or broke (the cause is attached)
  "PROTOCOL", // the server sent something this SDK cannot read
]);

export class RosterError extends Error {
  /**
   * @param {string} code a server code or a client code (see above)
   * @param {string} message what went wrong, as the server said it when it said it
   * @param {{event?: string, cause?: unknown, details?: object}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = "RosterError";
    this.code = code;
    /** The request's event name (`presence:join`, ...) when the error answers one. */
    this.event = extra.event;
    /** Anything else worth knowing (e.g. `attempts` for updateWith). */
    this.details = extra.details;
  }

  /** True when the code is one the server sends (rather than one made up on this side). */
  get fromServer() {
    return ServerErrorCodes.includes(this.code);
  }

  /** Builds the error of a refused ack: `{ok: false, error: {code, message}}`. */
  static fromAck(ack, event) {
    const error = ack && typeof ack === "object" ? ack.error : undefined;
    if (error && typeof error.code === "string") {
      return new RosterError(error.code, String(error.message ?? error.code), { event });
    }
    return new RosterError("PROTOCOL", `unreadable ack for ${event}: ${safeJson(ack)}`, { event });
  }

  /** Wraps anything thrown into a RosterError, keeping a RosterError as it is. */
  static wrap(error, code = "TRANSPORT", event) {
    if (error instanceof RosterError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new RosterError(code, message, { cause: error, event });
  }
}

function safeJson(value) {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}
