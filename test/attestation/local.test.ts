import test from "ava";
import { parsePemChain } from "../../attestation/certchain.ts";
import { evaluatePolicy, Reason, type ReasonCode, verifyLocalEvidence } from "../../attestation/mod.ts";
import { compareMeasurements, parseRim } from "../../attestation/rim.ts";
import { parseAttestationReport, parseReportText } from "../../attestation/spdm.ts";
import { type LocalDeviceEvidence, verifyReportSignature } from "../../attestation/verify.ts";
import type { AttestationPolicySpec } from "../../crds/types.generated.ts";
import { anchors, NONCE_931D, policy, vector, vectorDir, vectorTest } from "./vectors.ts";

const A = {
  report: "nvtrust/gpu-h100-550.90.07/hopperAttestationReport.txt",
  chain: "nvtrust/gpu-h100-550.90.07/hopperCertChain.txt",
  driverRim: "go-nvattest-tools/rim/NV_GPU_DRIVER_GH100_550.90.07.xml",
  vbiosRim: "go-nvattest-tools/rim/NV_GPU_VBIOS_1010_0200_882_96009F0001.xml",
};
/** PROVENANCE: device-chain OCSP answers are fresh at T1, RIM-chain answers at T2. */
const T1 = "2025-08-21T12:00:00Z";
const T2 = "2025-10-24T12:00:00Z";
const NOW = "2026-11-24T00:00:00Z";

function setA(overrides: Partial<LocalDeviceEvidence> = {}): LocalDeviceEvidence {
  return {
    report: vector(A.report),
    certificateChain: vector(A.chain),
    rims: [{ xml: vector(A.driverRim) }, { xml: vector(A.vbiosRim) }],
    ocspResponses: vectorDir("go-nvattest-tools/ocsp").map((f) => vector(`go-nvattest-tools/ocsp/${f}`)),
    declaredCcMode: "on",
    ...overrides,
  };
}

async function judge(
  device: LocalDeviceEvidence,
  at: string,
  options: { nonce?: string; collectedAt?: string; spec?: AttestationPolicySpec } = {},
) {
  const facts = await verifyLocalEvidence({
    devices: [device],
    expectedNonce: options.nonce ?? NONCE_931D,
    collectedAt: options.collectedAt ?? at,
    anchors: anchors(),
  });
  const verdict = evaluatePolicy(facts, options.spec ?? policy(), { at: new Date(at) });
  const failures = verdict.devices.flatMap((d) => d.failures);
  const subjects = (reason: ReasonCode) => failures.filter((f) => f.reason === reason).map((f) => f.subject);
  return { facts, verdict, failures, subjects };
}

vectorTest(
  "SET A at T1: everything verifies except the RIM-chain OCSP answers, which are not yet issued",
  async (t) => {
    const { verdict, subjects, facts } = await judge(setA(), T1);
    t.deepEqual(verdict.reasons, [Reason.OcspStale]);
    t.deepEqual(subjects(Reason.OcspStale), [
      "rim:NV_GPU_DRIVER_GH100_550.90.07[0]",
      "rim:NV_GPU_DRIVER_GH100_550.90.07[1]",
      "rim:NV_GPU_DRIVER_GH100_550.90.07[2]",
      "rim:NV_GPU_VBIOS_1010_0200_882_96009F0001[0]",
    ]);
    const device = facts.devices[0];
    t.is(device?.architecture, "Hopper");
    t.is(device?.measurements?.outcomes.filter((o) => o.status === "match").length, 32);
    t.deepEqual(device?.measurements?.skipped, [35]);
    t.deepEqual(device?.rimIds, ["NV_GPU_DRIVER_GH100_550.90.07", "NV_GPU_VBIOS_1010_0200_882_96009F0001"]);
  },
);

vectorTest(
  "SET A at T2: only the device-chain OCSP answers are stale (one responder has expired)",
  async (t) => {
    const { verdict, subjects, failures } = await judge(setA(), T2);
    t.deepEqual(verdict.reasons, [Reason.OcspStale]);
    t.deepEqual(subjects(Reason.OcspStale), ["device-chain[1]", "device-chain[2]", "device-chain[3]"]);
    t.regex(failures.find((f) => f.subject === "device-chain[3]")?.message ?? "", /Responder L1-A 02/);
  },
);

vectorTest("SET A at T1 without RIM-chain answers: RequireGood refuses with OcspUnavailable", async (t) => {
  const device = setA({
    ocspResponses: vectorDir("go-nvattest-tools/ocsp")
      .filter((f) => f.includes("certificate"))
      .map((f) => vector(`go-nvattest-tools/ocsp/${f}`)),
  });
  const { verdict } = await judge(device, T1);
  t.deepEqual(verdict.reasons, [Reason.OcspUnavailable], "without RIM-chain answers, RequireGood refuses");
});

vectorTest("SET A today: RIM signers expired and every OCSP answer stale", async (t) => {
  const { verdict, subjects } = await judge(setA(), NOW);
  t.deepEqual(verdict.reasons, [Reason.OcspStale, Reason.RimExpired]);
  t.deepEqual(subjects(Reason.RimExpired), [
    "rim:NV_GPU_DRIVER_GH100_550.90.07[0]",
    "rim:NV_GPU_VBIOS_1010_0200_882_96009F0001[0]",
  ]);
});

vectorTest(
  "SET A: an OCSP policy that requires nonces refuses the cached (nonce-less) answers",
  async (t) => {
    const { subjects } = await judge(setA(), T1, {
      spec: policy({ ocsp: { policy: "RequireGood", requireNonce: true } }),
    });
    t.deepEqual(subjects(Reason.OcspNonceMismatch), [
      "device-chain[1]",
      "device-chain[2]",
      "device-chain[3]",
    ]);
  },
);

vectorTest("SET B (2023) verifies at 2024-06-01 except for OCSP, for which no answers exist", async (t) => {
  const { verdict, facts } = await judge(
    {
      report: vector("nvtrust/gpu-h100-545.00-2023/attestationReport.txt"),
      certificateChain: vector("nvtrust/gpu-h100-545.00-2023/gpuAkCertChain.txt"),
      rims: [
        { xml: vector("nvtrust/rims/Driver_RIM_test_no_gpu.swidtag") },
        { xml: vector("nvtrust/rims/1010_0200_882_96005E0001_test_no_gpu.swidtag") },
      ],
      declaredCcMode: "on",
    },
    "2024-06-01T00:00:00Z",
    { nonce: "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e" },
  );
  t.deepEqual(verdict.reasons, [Reason.OcspUnavailable]);
  t.is(facts.devices[0]?.measurements?.outcomes.filter((o) => o.status === "match").length, 32);
});

vectorTest("SET C (NVSwitch LS10) verifies today except for OCSP, for which no answers exist", async (t) => {
  const dir = "attestation-sdk/switch-ls10-96.10.55.00.01";
  const { verdict, facts } = await judge(
    {
      report: vector(`${dir}/switchAttestationReport.txt`),
      certificateChain: vector(`${dir}/switchCertChain.txt`),
      rims: [{ xml: vector(`${dir}/switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml`) }],
    },
    NOW,
  );
  t.deepEqual(verdict.reasons, [Reason.OcspUnavailable]);
  t.is(facts.devices[0]?.kind, "switch");
  t.is(facts.devices[0]?.measurements?.outcomes.filter((o) => o.status === "match").length, 31);
});

const negatives: [string, () => LocalDeviceEvidence, ReasonCode, { nonce?: string; at?: string }?][] = [
  [
    "report with an invalid signature",
    () =>
      setA({
        report: vector(
          "attestation-sdk/gpu-h100-invalid-signature/hopperAttestationReportInvalidSignature.txt",
        ),
        rims: [],
      }),
    Reason.SignatureInvalid,
  ],
  [
    "SET B report paired with SET A's chain",
    () => setA({ report: vector("nvtrust/gpu-h100-545.00-2023/attestationReport.txt") }),
    Reason.SignatureInvalid,
  ],
  [
    "chain with the root only",
    () => setA({ certificateChain: vector("trustee/hopper_cert_chain_case2.txt") }),
    Reason.CertChainInvalid,
  ],
  [
    "chain missing an intermediate",
    () => setA({ certificateChain: vector("trustee/hopper_cert_chain_case3.txt") }),
    Reason.CertChainInvalid,
  ],
  [
    "chain missing its leaf",
    () => setA({ certificateChain: vector("trustee/hopper_cert_chain_case4.txt") }),
    Reason.FwidMismatch,
  ],
  ["wrong nonce", () => setA(), Reason.NonceMismatch, { nonce: "00".repeat(32) }],
  [
    "a 550.144.03 RIM supplied as the 550.90.07 RIM",
    () =>
      setA({
        rims: [
          {
            id: "NV_GPU_DRIVER_GH100_550.90.07",
            xml: vector("attestation-sdk/rims/incorrect_signature_driver_rim.xml"),
          },
        ],
      }),
    Reason.RimNotFound,
  ],
  [
    "a GB100 debug-CA RIM supplied as the VBIOS RIM",
    () =>
      setA({
        rims: [
          {
            id: "NV_GPU_VBIOS_1010_0200_882_96009F0001",
            xml: vector("attestation-sdk/rims/incorrect_cert_chain_driver_rim.xml"),
          },
        ],
      }),
    Reason.RimNotFound,
  ],
  ["no RIMs at all", () => setA({ rims: [] }), Reason.RimNotFound],
  ["CC mode off on the node", () => setA({ declaredCcMode: "off" }), Reason.CcModeOff],
];
for (const [title, device, reason, options] of negatives) {
  vectorTest(`refused: ${title} → ${reason}`, async (t) => {
    const { verdict } = await judge(
      device(),
      options?.at ?? T1,
      options?.nonce ? { nonce: options.nonce } : {},
    );
    t.false(verdict.passed);
    t.true(verdict.reasons.includes(reason), `reasons: ${verdict.reasons.join(", ")}`);
  });
}

vectorTest(
  "RIM signature and chain failures name the RIM (ids supplied as NVIDIA's RIM service does)",
  async (t) => {
    // 550.144.03 report does not exist, so judge the tampered 550.144.03 RIMs on their own facts.
    const sig = parseRim({ xml: vector("attestation-sdk/rims/incorrect_signature_driver_rim.xml") });
    const { checkRimSignature } = await import("../../attestation/rim.ts");
    t.regex((await checkRimSignature(sig)) ?? "", /does not verify/);
    const digest = parseRim({
      xml: vector("attestation-sdk/rims/sample_rims/NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml"),
    });
    t.regex((await checkRimSignature(digest)) ?? "", /digest/i);
    const dir = "attestation-sdk/gpu-h100-535.86.09";
    const { subjects } = await judge(
      {
        report: vector(`${dir}/hopperAttestationReport.txt`),
        certificateChain: vector(`${dir}/hopperCertChain.txt`),
        rims: [
          {
            xml: vector(
              "attestation-sdk/rims/sample_rims/NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml",
            ),
          },
          {
            xml: vector(
              "attestation-sdk/rims/sample_rims/NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml",
            ),
          },
        ],
        declaredCcMode: "on",
      },
      "2025-10-01T00:00:00Z",
      { nonce: "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66" },
    );
    t.deepEqual(subjects(Reason.RimSignatureInvalid), ["rim:NV_GPU_DRIVER_GH100_535.86.09"]);
    t.deepEqual(
      subjects(Reason.MeasurementMismatch),
      [7, 9, 21, 22, 25, 26, 27, 29, 30, 31, 32, 34, 37, 39, 40, 41].map((i) => `measurement[${i}]`),
    );
  },
);

vectorTest("the debug-CA RIM fails its chain; a wrong RIM root fails every RIM chain", async (t) => {
  const { verifyChain, parseCertificate } = await import("../../attestation/certchain.ts");
  const debug = parseRim({ xml: vector("attestation-sdk/rims/incorrect_cert_chain_driver_rim.xml") });
  const root = parseCertificate(vector("nvtrust/roots/verifier_RIM_root.pem"), "root");
  t.true(
    verifyChain(debug.signerChain, root, { label: "rim", ignorePresentedRoot: true }).problems.length > 0,
  );
  const facts = await verifyLocalEvidence({
    devices: [setA()],
    expectedNonce: NONCE_931D,
    collectedAt: T1,
    anchors: { ...anchors(), rimRootPem: vector("attestation-sdk/rims/incorrect_rim_root.crt") },
  });
  const verdict = evaluatePolicy(facts, policy(), { at: new Date(T1) });
  t.true(verdict.reasons.includes(Reason.RimChainInvalid));
});

vectorTest("measurement comparison reports exactly the mismatching indices", (t) => {
  const report = parseReportText(vector(A.report));
  const other = parseRim({ xml: vector("attestation-sdk/rims/NV_GPU_DRIVER_GH100_550.144.03.xml") });
  const cmp = compareMeasurements(report, [{ label: "driver", rim: other }]);
  t.deepEqual(
    cmp.outcomes.filter((o) => o.status !== "match").map((o) => o.index),
    [7, 22, 31, 39, 40],
  );
  const genuine = compareMeasurements(report, [
    { label: "driver", rim: parseRim({ xml: vector(A.driverRim) }) },
  ]);
  t.deepEqual(
    genuine.outcomes.flatMap((o) =>
      o.status === "match" && o.alternative > 0 ? [[o.index, o.alternative]] : [],
    ),
    [
      [23, 1],
      [24, 1],
    ],
  );
});

vectorTest("policy rules: stale evidence, disallowed driver/VBIOS/architecture", async (t) => {
  const stale = await judge(setA(), T1, { collectedAt: "2025-08-21T08:00:00Z" });
  t.true(stale.verdict.reasons.includes(Reason.EvidenceStale));
  const strict = await judge(setA(), T1, {
    spec: policy({
      allowedDriverVersions: ["570.133.20"],
      allowedVbiosVersions: ["96.00.74.00.1A"],
      gpuArchitectures: ["Blackwell"],
    }),
  });
  for (const reason of [Reason.DriverNotAllowed, Reason.VbiosNotAllowed, Reason.ArchitectureNotAllowed]) {
    t.true(strict.verdict.reasons.includes(reason), reason);
  }
  const allowed = await judge(setA(), T1, {
    spec: policy({ allowedDriverVersions: ["550.90.07"], allowedVbiosVersions: ["96.00.9f.00.01"] }),
  });
  t.deepEqual(allowed.verdict.reasons, [Reason.OcspStale]);
});

vectorTest("every single-bit change of the signed report is refused", (t) => {
  const bytes = new Uint8Array(Buffer.from(vector(A.report), "hex"));
  const leaf = parsePemChain(vector(A.chain), "chain")[0];
  if (leaf === undefined) throw new Error("no leaf");
  let refused = 0;
  for (let i = 0; i < bytes.length; i++) {
    const mutated = bytes.slice();
    mutated[i] = (mutated[i] as number) ^ 0x01;
    try {
      if (!verifyReportSignature(parseAttestationReport(mutated), leaf)) refused++;
    } catch {
      refused++;
    }
  }
  t.is(refused, bytes.length);
});

vectorTest("the verdict is stable JSON an audit record can hold", async (t) => {
  const { canonicalJson, verdictDigest } = await import("../../attestation/verdict.ts");
  const one = await judge(setA(), T1);
  const two = await judge(setA(), T1);
  t.is(canonicalJson(one.verdict), canonicalJson(two.verdict));
  t.is(verdictDigest(one.verdict), verdictDigest(two.verdict));
  t.is(one.verdict.apiVersion, "sovereign.ai/attestation-verdict/v1");
  t.regex(one.verdict.evidenceDigest, /^[0-9a-f]{64}$/);
});

test("a verdict with no devices never passes", (t) => {
  const verdict = evaluatePolicy(
    {
      mode: "Local",
      expectedNonce: "",
      collectedAt: "2025-01-01T00:00:00Z",
      evidenceDigest: "",
      devices: [],
    },
    policy(),
    { at: new Date("2025-01-01T00:00:00Z") },
  );
  t.false(verdict.passed);
});
