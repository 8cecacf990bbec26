/** A mint request the testbed cannot honour (nonce, time, version or fault name); the message says which and what to use. */
export class TestbedMintError extends Error {
  override name = "TestbedMintError";
}

export const isTestbedMintError = (e: unknown): e is TestbedMintError => e instanceof TestbedMintError;
