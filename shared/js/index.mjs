// ably-interception-client as an ES module: the same objects as the CommonJS entry (one InterceptionError).
import client from "./src/client.cjs";

export const {
  Suite, InterceptionError, connect, openSession, withSession, rules, ACTIONS, FLAGS, encodeFrame, decodeFrame,
  actionName, actionNumber, frameMatches,
} = client;
export default client;
