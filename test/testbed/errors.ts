/**
 * Reason codes for everything the testbed scripts refuse to do. Each message says what
 * to do next; the code is what a user greps for in CI logs.
 */
export type TestbedReason =
  | "GoToolchainMissing"
  | "GoToolchainTooOld"
  | "GoBuildFailed"
  | "TestbedCacheCorrupt"
  | "PortInUse"
  | "OpenSSLMissing"
  | "ServerNotReady"
  | "TestbedNotUp"
  | "UnknownComponent"
  | "LockTimeout"
  | "HubConfigChanged"
  | "LeafLinkStuck";

export class TestbedError extends Error {
  override name = "TestbedError";
  readonly reason: TestbedReason;

  constructor(reason: TestbedReason, message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}

export function isTestbedError(err: unknown, reason?: TestbedReason): err is TestbedError {
  return err instanceof TestbedError && (reason === undefined || err.reason === reason);
}
