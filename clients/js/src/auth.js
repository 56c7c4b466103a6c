// Tokens (DESIGN.md §7): this module is the one place that knows how a token is obtained,
// where its expiry is read, and when to refresh it.
//
// The JWT is decoded, never verified: the client only needs `exp` to know when to ask the app
// for a fresh token; the server is the one that verifies.

/**
 * Asks the app for the current token. `token` is a string, a (possibly async) function that
 * returns one, or undefined (an open hub). Called on every (re)connect and before expiry, so a
 * function can hand out a fresh token each time.
 * @returns {Promise<string | undefined>}
 */
export async function resolveToken(token) {
  if (typeof token === "function") {
    const value = await token();
    return value == null || value === "" ? undefined : String(value);
  }
  return token == null || token === "" ? undefined : String(token);
}

/** The `exp` claim of a JWT in ms since the epoch, or undefined when it has none or is not a JWT. */
export function jwtExpiresAt(token) {
  if (typeof token !== "string") return undefined;
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1]));
    return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How long to wait before refreshing a token that expires at `expiresAt`: `refreshBeforeMs`
 * ahead of expiry, but never later than half the remaining lifetime (a short-lived token
 * still gets refreshed in time) and never sooner than a second (no busy loop on a token that
 * is already expired: the server will refuse it and the reconnect path fetches another).
 */
export function refreshDelay(expiresAt, now, refreshBeforeMs) {
  const remaining = expiresAt - now;
  const margin = Math.min(refreshBeforeMs, remaining / 2);
  return Math.max(1000, Math.floor(remaining - margin));
}

/** Adds `token` as the `token` query parameter (how browsers pass it to `/ws`). */
export function withTokenQuery(url, token) {
  if (!token) return url;
  const parsed = new URL(url);
  parsed.searchParams.set("token", token);
  return parsed.toString();
}

function base64UrlDecode(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  const binary = atob(base64);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}
