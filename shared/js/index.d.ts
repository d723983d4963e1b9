// Types of ably-interception-client (SPEC Part 7). Names are the control API's (docs/api.md).

export type AblyActionName =
  | "HEARTBEAT" | "ACK" | "NACK" | "CONNECT" | "CONNECTED" | "DISCONNECT" | "DISCONNECTED" | "CLOSE" | "CLOSED"
  | "ERROR" | "ATTACH" | "ATTACHED" | "DETACH" | "DETACHED" | "PRESENCE" | "MESSAGE" | "SYNC" | "AUTH"
  | "ACTIVATE" | "OBJECT" | "OBJECT_SYNC" | "ANNOTATION";
export type AblyAction = AblyActionName | number;
export type AblyFlagName =
  | "HAS_PRESENCE" | "HAS_BACKLOG" | "RESUMED" | "TRANSIENT" | "ATTACH_RESUME" | "HAS_OBJECTS" | "PRESENCE"
  | "PUBLISH" | "SUBSCRIBE" | "PRESENCE_SUBSCRIBE" | "ANNOTATION_PUBLISH" | "ANNOTATION_SUBSCRIBE"
  | "OBJECT_SUBSCRIBE" | "OBJECT_PUBLISH";

/** An Ably protocol message; `action` may be named. msgpack binary fields are Uint8Array. */
export interface ProtocolMessage {
  action?: AblyAction;
  [field: string]: unknown;
}

export type FrameType = "text" | "binary";
export interface RawFrame {
  type: FrameType;
  /** The text, or Base64 of the bytes (the bytes themselves on a msgpack control connection). */
  data: string | Uint8Array;
}

/** How the control connection's envelopes travel (SPEC Part 10): JSON text frames, or msgpack binary frames. */
export type Encoding = "json" | "msgpack";

/** A query or header condition: equal to this text, or present (true) / absent (false). */
export type Condition = string | boolean;

export interface Match {
  event?: "message" | "connect" | "timer" | "ping" | "pong" | "close" | "http";
  fromClient?: boolean;
  connectionID?: string;
  type?: FrameType;
  host?: string;
  path?: string;
  query?: Record<string, Condition>;
  headers?: Record<string, Condition>;
  action?: AblyAction | AblyAction[];
  channel?: string;
  fields?: Record<string, unknown>;
  afterMs?: number;
  method?: string;
}

export type RuleAction = { type: string; [field: string]: unknown };

export interface Rule {
  id?: string;
  match: Match;
  action: RuleAction | RuleAction[];
  times?: number | null;
  skip?: number;
}

export interface RuleOptions {
  id?: string;
  times?: number | null;
  skip?: number;
}

export interface ConnectionOpened {
  connectionID: string;
  url: string;
  host: string;
  proto: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  upstream: string;
}

export interface ConnectionClosed {
  connectionID: string;
  closedBy: "client" | "server" | "proxy";
  code: number | null;
  reason: string;
  clean: boolean;
}

export interface RuleMatched {
  ruleId: string;
  event: string;
  connectionID?: string;
  fromClient?: boolean;
  id?: string;
  type?: FrameType;
  /** The text, or Base64 of the bytes (the bytes on a msgpack control connection). */
  data?: string | Uint8Array;
  matched: number;
  message?: ProtocolMessage;
  [field: string]: unknown;
}

/** What intercept's handler is given for each transformInterceptedMessage. */
export interface Intercepted {
  id: string;
  connectionID: string;
  fromClient: boolean;
  type: FrameType;
  /** As Part 1 sends it: the text, or Base64 of the bytes (on a msgpack control connection, the bytes). */
  data: string | Uint8Array;
  format: "json" | "msgpack";
  /** The decoded protocol message (undefined for a frame that is none). */
  message: ProtocolMessage | undefined;
  action: AblyActionName | undefined;
  ruleId?: string;
}

export type InterceptAnswer = void | undefined | null | { drop: true } | { message: ProtocolMessage };
export type InterceptHandler = (msg: Intercepted) => InterceptAnswer | Promise<InterceptAnswer>;

export interface TraceEvent {
  seq: number;
  t: number;
  kind: string;
  connectionID?: string;
  fromClient?: boolean;
  ruleId?: string;
  [field: string]: unknown;
}

export interface SessionParams {
  url?: string;
  mode?: "direct" | "proxy" | "local";
  upstream?: string;
  pid?: number;
  pids?: number[];
  port?: number;
  decoded?: boolean;
  /** How many messages per connection and direction may be with the suite at once (1–256; SPEC Part 10). */
  window?: number;
  encoding?: Encoding;
}

/** The ably-js ClientOptions clientOptions() gives (direct mode). */
export interface DirectClientOptions {
  endpoint: string;
  port: number;
  tls: false;
  fallbackHosts: string[];
  [option: string]: unknown;
}

export class InterceptionError extends Error {
  code: number;
  data: unknown;
  interceptionTrace?: { jsonl: string; har: string };
  constructor(message: string, code: number, data?: unknown);
}

type Listener<T> = (value: T) => void;

export class Suite {
  readonly url: string;
  readonly encoding: Encoding;
  closed: boolean;
  sessionID: string | undefined;
  proxyPort: number | undefined;
  mitmproxyPort: number | undefined;
  /** The open connections, oldest first. */
  readonly connections: ConnectionOpened[];

  on(event: "connectionOpened", listener: Listener<ConnectionOpened>): this;
  on(event: "connectionClosed", listener: Listener<ConnectionClosed>): this;
  on(event: "ruleMatched", listener: Listener<RuleMatched>): this;
  on(event: "close", listener: Listener<{ code?: number; reason?: string }>): this;
  once(event: "connectionOpened", listener: Listener<ConnectionOpened>): this;
  once(event: "connectionClosed", listener: Listener<ConnectionClosed>): this;
  once(event: "ruleMatched", listener: Listener<RuleMatched>): this;
  once(event: "close", listener: Listener<{ code?: number; reason?: string }>): this;
  off(event: string, listener: (...args: any[]) => void): this;

  call(method: string, params?: Record<string, unknown>, timeoutMs?: number): Promise<any>;
  close(): Promise<void>;

  startInterception(params?: { mode?: "proxy" | "local" | "none"; pid?: number; decoded?: boolean; window?: number }
  ): Promise<{}>;
  injectMessage(params: { connectionID: string; fromClient: boolean; type?: FrameType; data?: string;
                          message?: ProtocolMessage }): Promise<{ id: string }>;
  closeConnection(params: { connectionID: string; side?: "client" | "server" | "both"; code?: number;
                            reason?: string; abrupt?: boolean }): Promise<{}>;
  addRules(params: { rules: Rule[]; position?: "append" | "prepend" }): Promise<{ ids: string[] }>;
  removeRules(params: { ids: string[] }): Promise<{ removed: number }>;
  clearRules(params?: {}): Promise<{ removed: number }>;
  listRules(params?: {}): Promise<{ rules: Array<Rule & { id: string; matched: number; remaining: number | null }> }>;
  sendPing(params: { connectionID: string; side: "client" | "server"; data?: string }): Promise<{}>;
  getTrace(params?: { since?: number; connectionID?: string; limit?: number }): Promise<{ events: TraceEvent[];
                                                                                          next: number;
                                                                                          epochUs: number }>;
  clearTrace(params?: {}): Promise<{ cleared: number }>;
  exportTrace(params: { format: "jsonl" | "har"; connectionID?: string }): Promise<{ data: string }>;
  closeSession(params?: { closeConnections?: boolean }): Promise<{}>;
  waitForRule(id: string, options?: { count?: number; timeoutMs?: number }): Promise<{ matched: number }>;

  intercept(handler?: InterceptHandler): this;
  interceptHttp(handlers?: { request?: (params: any) => unknown; response?: (params: any) => unknown }): this;
  inject(options: { connectionID?: string; fromClient?: boolean; message?: ProtocolMessage; raw?: RawFrame }):
    Promise<{ id: string }>;
  waitForMessage(match: Match, options?: { count?: number; timeoutMs?: number; since?: number }):
    Promise<ProtocolMessage | undefined>;
  expectNoMessage(match: Match, options?: { withinMs?: number }): Promise<void>;
  waitForConnection(options?: { timeoutMs?: number }): Promise<ConnectionOpened>;
  clientOptions(extra?: Record<string, unknown>): DirectClientOptions;
}

export function connect(options?: { url?: string; encoding?: Encoding }): Promise<Suite>;
export function openSession(options?: SessionParams): Promise<Suite>;
export function withSession<T>(options: SessionParams & { name?: string }, fn: (suite: Suite) => Promise<T> | T):
  Promise<T>;
export function withSession<T>(fn: (suite: Suite) => Promise<T> | T): Promise<T>;

type Builder<O = {}> = (match?: Match, options?: RuleOptions & O) => Rule;
type Body = { json?: unknown; body?: string; bodyBase64?: string };

export const rules: {
  rule(action: RuleAction | RuleAction[], match?: Match, options?: RuleOptions): Rule;
  closeAction(options?: { code?: number; reason?: string; abrupt?: boolean; side?: "client" | "server" | "both" }):
    RuleAction;
  injectAction(message: ProtocolMessage, options?: { fromClient?: boolean }): RuleAction;
  passAll: Builder;
  observe: Builder;
  notify: Builder;
  drop: Builder;
  transform: Builder;
  replaceWith: Builder<{ message?: ProtocolMessage; raw?: RawFrame }>;
  patch: Builder<{ set?: Record<string, unknown>; unset?: string[];
                   flags?: { set?: Array<AblyFlagName | number>; clear?: Array<AblyFlagName | number> } }>;
  delay: Builder<{ ms: number }>;
  inject: Builder<{ message?: ProtocolMessage; raw?: RawFrame; fromClient?: boolean; before?: boolean }>;
  suppressOnwards: Builder<{ fromClient?: boolean }>;
  close: Builder<{ code?: number; reason?: string; abrupt?: boolean; side?: "client" | "server" | "both" }>;
  refuseConnect: Builder<{ status?: number; body?: string; headers?: Record<string, string> }>;
  answerConnect: Builder<{ messages?: ProtocolMessage[]; close?: number; abrupt?: boolean }>;
  delayConnect: Builder<{ ms: number }>;
  routeConnect: Builder<{ host: string; proto?: "ws" | "wss" }>;
  after(ms: number, actions: RuleAction[], match?: Match, options?: RuleOptions): Rule;
  dropPings: Builder;
  silence: Builder;
  httpRespond: Builder<Body & { status?: number; headers?: Record<string, string> }>;
  httpDelay: Builder<{ ms: number }>;
  httpDrop: Builder<{ mode?: "reset" | "hang" }>;
  httpRoute: Builder<{ host: string; proto?: "http" | "https" }>;
  httpObserve: Builder;
  httpTransform: Builder<{ response?: boolean }>;
  httpReplaceResponse: Builder<Body & { status?: number; headers?: Record<string, string> }>;
  httpPatchResponse: Builder<{ set?: Record<string, unknown>; unset?: string[] }>;
};

export const ACTIONS: readonly AblyActionName[];
export const FLAGS: Readonly<Record<AblyFlagName, number>>;
export function encodeFrame(message: ProtocolMessage, format: "json" | "msgpack" | undefined, raw?: boolean): RawFrame;
export function decodeFrame(frame: RawFrame): ProtocolMessage | undefined;
export function actionName(action: AblyAction): AblyActionName | undefined;
export function actionNumber(action: AblyAction): number | undefined;
export function frameMatches(match: Match, frame: Record<string, unknown>, opened?: Record<string, unknown>): boolean;

declare const client: {
  Suite: typeof Suite; InterceptionError: typeof InterceptionError; connect: typeof connect;
  openSession: typeof openSession; withSession: typeof withSession; rules: typeof rules;
};
export default client;
