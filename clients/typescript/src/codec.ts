import { decode as msgpackDecode, encode as msgpackEncode } from "@msgpack/msgpack";

export type Format = "json" | "msgpack";

export const SUBPROTOCOL_MSGPACK = "kintsugi.msgpack";

export type WireData = string | Uint8Array;

const textEncoder = new TextEncoder();

export function encodeFrame(format: Format, frame: object): WireData {
  return format === "json" ? JSON.stringify(frame) : msgpackEncode(frame, { ignoreUndefined: true });
}

/** The size of an encoded frame in bytes (what the server's WS_MAX_FRAME_BYTES limits). */
export function frameBytes(data: WireData): number {
  return typeof data === "string" ? textEncoder.encode(data).byteLength : data.byteLength;
}

/** Decode what a socket delivered: a string (JSON), or binary (MessagePack) in any of its shapes. */
export function decodeFrame(data: unknown): Record<string, unknown> | null {
  let value: unknown;
  if (typeof data === "string") {
    value = JSON.parse(data);
  } else if (data instanceof ArrayBuffer) {
    value = msgpackDecode(new Uint8Array(data));
  } else if (ArrayBuffer.isView(data)) {
    value = msgpackDecode(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  } else if (Array.isArray(data)) {
    // `ws` with binaryType "fragments".
    const parts = data as Uint8Array[];
    const total = parts.reduce((n, p) => n + p.byteLength, 0);
    const joined = new Uint8Array(total);
    let offset = 0;
    for (const part of parts) {
      joined.set(part, offset);
      offset += part.byteLength;
    }
    value = msgpackDecode(joined);
  } else {
    return null;
  }
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}
