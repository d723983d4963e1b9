// mocha --require ably-interception-client/mocha: `this.interception` in every test.
import type { Suite as InterceptionSuite } from "./index.js";

export declare const mochaHooks: {
  beforeEach(this: { interception?: InterceptionSuite }): Promise<void>;
  afterEach(this: { interception?: InterceptionSuite; currentTest?: unknown }): Promise<void>;
};

declare module "mocha" {
  interface Context {
    /** This test's session (ably-interception-client/mocha). */
    interception: InterceptionSuite;
  }
}
