// Unit and integration tests. Tests that restart shared servers live in
// *.disruptive.test.ts and run afterwards, alone (see ava.disruptive.config.js),
// so they never pull a server out from under a concurrent test.
export default {
  files: [
    "test/**/*.test.ts",
    "operator/**/*.test.ts",
    "attestation/**/*.test.ts",
    "deltas/**/*.test.ts",
    "crds/**/*.test.ts",
    "!**/*.disruptive.test.ts",
  ],
  extensions: { ts: "module" },
  timeout: "3m",
  concurrency: 2,
  workerThreads: false,
};
