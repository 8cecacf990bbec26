import base from "./ava.config.js";

// Tests that restart testbed servers: one file at a time, after the main suite.
export default { ...base, files: ["test/**/*.disruptive.test.ts"], concurrency: 1, serial: true };
