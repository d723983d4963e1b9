"use strict";
// The Ably realtime protocol as a suite needs it: action and flag names, and frames in either format
// (JSON in text frames, msgpack in binary frames, as the connection's `format` query says).
const msgpack = require("@msgpack/msgpack");

const ACTIONS = Object.freeze([
  "HEARTBEAT", "ACK", "NACK", "CONNECT", "CONNECTED", "DISCONNECT", "DISCONNECTED", "CLOSE", "CLOSED", "ERROR",
  "ATTACH", "ATTACHED", "DETACH", "DETACHED", "PRESENCE", "MESSAGE", "SYNC", "AUTH", "ACTIVATE", "OBJECT",
  "OBJECT_SYNC", "ANNOTATION",
]);

const FLAGS = Object.freeze({
  HAS_PRESENCE: 1 << 0, HAS_BACKLOG: 1 << 1, RESUMED: 1 << 2, TRANSIENT: 1 << 4, ATTACH_RESUME: 1 << 5,
  HAS_OBJECTS: 1 << 7, PRESENCE: 1 << 16, PUBLISH: 1 << 17, SUBSCRIBE: 1 << 18, PRESENCE_SUBSCRIBE: 1 << 19,
  ANNOTATION_PUBLISH: 1 << 21, ANNOTATION_SUBSCRIBE: 1 << 22, OBJECT_SUBSCRIBE: 1 << 24, OBJECT_PUBLISH: 1 << 25,
});

/** The action's number, from its name ("ATTACH") or number; undefined when it is neither. */
function actionNumber(action) {
  if (typeof action === "number" && Number.isInteger(action)) return action;
  if (typeof action === "string") {
    const index = ACTIONS.indexOf(action.toUpperCase());
    if (index >= 0) return index;
  }
  return undefined;
}

/** The action's name ("ATTACH"), or undefined. */
function actionName(action) {
  const number = actionNumber(action);
  return number === undefined ? undefined : ACTIONS[number];
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function containsBinary(value) {
  if (value instanceof Uint8Array || value instanceof ArrayBuffer) return true;
  if (Array.isArray(value)) return value.some(containsBinary);
  if (value && typeof value === "object") return Object.values(value).some(containsBinary);
  return false;
}

/** A copy of message with its action numbered (a suite may name it). */
function numbered(message) {
  if (!message || typeof message !== "object") throw new TypeError("a protocol message must be an object");
  const out = { ...message };
  if ("action" in out) {
    const number = actionNumber(out.action);
    if (number === undefined) throw new TypeError(`unknown Ably action ${JSON.stringify(out.action)}`);
    out.action = number;
  }
  return out;
}

/** The frame ({type, data}: data Base64 for binary, as the control API carries it in JSON; `raw`: the bytes, as a
 * msgpack control connection carries them) of a message in a format. */
function encodeFrame(message, format, raw = false) {
  const plain = numbered(message);
  if (format === "msgpack") {
    const bytes = msgpack.encode(plain);
    return { type: "binary", data: raw ? bytes : toBase64(bytes) };
  }
  if (containsBinary(plain)) throw new TypeError("binary fields need a msgpack connection (this one is JSON)");
  return { type: "text", data: JSON.stringify(plain) };
}

/** The decoded protocol message of a frame ({type, data}: binary data as Base64 or as bytes), or undefined when it
 * is none. */
function decodeFrame(frame) {
  try {
    const binary = frame.type === "binary";
    const value = !binary ? JSON.parse(frame.data)
      : msgpack.decode(typeof frame.data === "string" ? fromBase64(frame.data) : frame.data);
    return value && typeof value === "object" && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

module.exports = {
  ACTIONS, FLAGS, actionNumber, actionName, toBase64, fromBase64, containsBinary, numbered, encodeFrame,
  decodeFrame,
};
