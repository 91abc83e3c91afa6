export {
  KintsugiClient,
  CLOSE_POLICY,
  socketUrl,
  type ClientEvents,
  type ClientOptions,
  type ConnectionState,
  type DisconnectInfo,
  type FieldsOf,
  type GetToken,
  type LifecycleEvents,
  type ReplyOf,
  type RequestOptions,
  type StreamPosition,
  type TokenReason,
  type TokenRequest,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export { streamChat, type ChatStream } from "./chat.js";
export { KintsugiError, isKintsugiError, type ClientErrorCode, type ErrorCode, type ServerErrorCode } from "./errors.js";
export {
  KeyValueOutboxStorage,
  MemoryOutboxStorage,
  Outbox,
  newClientMsgId,
  type KeyValueStore,
  type OutboxEntry,
  type OutboxEvent,
  type OutboxStorage,
  type OutgoingMessage,
} from "./outbox.js";
export { AuthApi, AuthSession, type AuthSessionOptions, type TokenResponse, type User } from "./rest.js";
export { Backoff, type BackoffOptions } from "./backoff.js";
export { SUBPROTOCOL_MSGPACK, type Format } from "./codec.js";
export { tokenExpiry } from "./token.js";
export * from "./generated/protocol.js";
