// roster-client: the JavaScript client of Roster, a realtime presence hub.
// See README.md for the guide; index.d.ts for the types.

export { connect, RosterClient, DEFAULTS } from "./client.js";
export { Room } from "./room.js";
export { MemberSet, compareVersions } from "./members.js";
export { MetadataChannel, Lock } from "./metadata.js";
export { Subscription } from "./messages.js";
export { RosterError, ServerErrorCodes, ClientErrorCodes } from "./errors.js";
export { Backoff, DEFAULT_BACKOFF } from "./backoff.js";
export { jwtExpiresAt } from "./auth.js";
