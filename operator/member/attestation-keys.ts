// Learner keys: one Ed25519 key pair per learner pod. The private key lives in a Secret the pod
// mounts (owned by the pod, so it goes with it); the public key is what the attestation nonce
// commits to. When the gate releases a pod it writes the binding into the pod's annotations;
// the work controller lists those bindings in the RegionWork's status as `learnerKeys`, which is
// what the hub checks a delta's signature against. Pure except for key generation.
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import type { V1Pod, V1Secret } from "@kubernetes/client-node";
import type { LearnerKey } from "../../crds/types.generated.ts";
import { LEARNER_KEY_PREFIX } from "../learner-keys.ts";
import { apiTime } from "../runtime/conditions.ts";
import { ATTESTED_NODE_ANNOTATION } from "./attestation-rules.ts";

export const LEARNER_KEY_MOUNT = "/var/run/sovereign/learner-key";
export const LEARNER_KEY_FILE = "key.pem";
/** The Secret's annotation with the public key, for a reader of the Secret (the gate derives it from the private key). */
export const SECRET_PUBLIC_KEY_ANNOTATION = "sovereign.ai/learner-public-key";
export const learnerKeySecretName = (podName: string): string => `${podName}-key`;

/** The admission record the gate writes on a released pod. */
export const POD_ANNOTATIONS = {
  key: "sovereign.ai/learner-key",
  node: ATTESTED_NODE_ANNOTATION,
  verdict: "sovereign.ai/attestation-verdict",
  policy: "sovereign.ai/attestation-policy",
  attestedAt: "sovereign.ai/attested-at",
  nonce: "sovereign.ai/attestation-nonce",
  challenge: "sovereign.ai/attestation-challenge",
  round: "sovereign.ai/attestation-round",
  /** While gated: why the pod still waits (`Reason: message`). */
  gateStatus: "sovereign.ai/gate-status",
} as const;

/** Revoked keys kept in the status beyond the live ones, newest first. */
export const MAX_REVOKED_KEYS = 64;

export interface LearnerKeyPair {
  privatePem: string;
  /** `ed25519:` + base64url of the raw 32 bytes. */
  publicKey: string;
  /** The raw 32 public key bytes: what the nonce commits to. */
  raw: Uint8Array;
}

const rawOf = (publicKey: ReturnType<typeof createPublicKey>): Uint8Array => {
  const jwk = publicKey.export({ format: "jwk" });
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
    throw new Error(`a ${publicKey.asymmetricKeyType} key is not an Ed25519 key`);
  }
  return new Uint8Array(Buffer.from(jwk.x, "base64url"));
};

export const publicKeyField = (raw: Uint8Array): string =>
  `${LEARNER_KEY_PREFIX}${Buffer.from(raw).toString("base64url")}`;

export function generateLearnerKey(): LearnerKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = rawOf(publicKey);
  return {
    privatePem: privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
    publicKey: publicKeyField(raw),
    raw,
  };
}

/** The Secret holding a learner's private key (PEM PKCS#8, as the SDK reads it), owned by its pod. */
export function learnerKeySecret(
  pod: V1Pod,
  key: LearnerKeyPair,
  labels: Record<string, string> = {},
): V1Secret {
  const name = pod.metadata?.name ?? "";
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: learnerKeySecretName(name),
      namespace: pod.metadata?.namespace,
      labels: { ...labels, "app.kubernetes.io/managed-by": "sovereign-operator" },
      annotations: { [SECRET_PUBLIC_KEY_ANNOTATION]: key.publicKey },
      ownerReferences: [{ apiVersion: "v1", kind: "Pod", name, uid: pod.metadata?.uid ?? "" }],
    },
    type: "Opaque",
    stringData: { [LEARNER_KEY_FILE]: key.privatePem },
  };
}

/** True when the Secret is this pod's (owned by this pod instance, not one of the same name before it). */
export const secretBelongsTo = (secret: V1Secret, pod: V1Pod): boolean =>
  secret.metadata?.ownerReferences?.some((o) => o.kind === "Pod" && o.uid === pod.metadata?.uid) ?? false;

/** The learner's public key from its Secret, or why it cannot be had. */
export function publicKeyOfSecret(
  secret: V1Secret | undefined,
  pod: V1Pod,
): { publicKey: string; raw: Uint8Array } | { problem: string } {
  const name = learnerKeySecretName(pod.metadata?.name ?? "");
  if (!secret) return { problem: `the key Secret ${name} does not exist yet` };
  if (!secretBelongsTo(secret, pod))
    return { problem: `the key Secret ${name} belongs to an earlier pod of that name` };
  const pem = secret.data?.[LEARNER_KEY_FILE];
  if (!pem) return { problem: `the key Secret ${name} has no ${LEARNER_KEY_FILE}` };
  try {
    const raw = rawOf(createPublicKey(createPrivateKey(Buffer.from(pem, "base64").toString("utf8"))));
    return { publicKey: publicKeyField(raw), raw };
  } catch (err) {
    return { problem: `the key Secret ${name} holds no Ed25519 private key: ${(err as Error).message}` };
  }
}

/** The annotations that record a learner's admission (and clear its gate status). */
export function admissionAnnotations(
  entry: Omit<LearnerKey, "learner" | "revokedAt" | "revokedReason">,
): Record<string, string> {
  return {
    [POD_ANNOTATIONS.key]: entry.publicKey,
    [POD_ANNOTATIONS.node]: entry.node,
    [POD_ANNOTATIONS.verdict]: entry.verdictDigest,
    ...(entry.policyDigest ? { [POD_ANNOTATIONS.policy]: entry.policyDigest } : {}),
    [POD_ANNOTATIONS.attestedAt]: entry.attestedAt,
    [POD_ANNOTATIONS.nonce]: entry.nonce,
    [POD_ANNOTATIONS.challenge]: entry.challenge,
    [POD_ANNOTATIONS.round]: String(entry.round),
  };
}

/** A released learner's key binding, read back from its annotations. */
export function learnerKeyOfPod(pod: V1Pod): LearnerKey | undefined {
  const a = pod.metadata?.annotations ?? {};
  const A = POD_ANNOTATIONS;
  const [publicKey, node, verdictDigest, attestedAt, nonce, challenge] = [
    a[A.key],
    a[A.node],
    a[A.verdict],
    a[A.attestedAt],
    a[A.nonce],
    a[A.challenge],
  ];
  const round = Number(a[A.round]);
  if (
    !publicKey ||
    !node ||
    !verdictDigest ||
    !attestedAt ||
    !nonce ||
    !challenge ||
    !Number.isSafeInteger(round)
  )
    return undefined;
  return {
    learner: pod.metadata?.name ?? "",
    publicKey,
    node,
    verdictDigest,
    ...(a[A.policy] ? { policyDigest: a[A.policy] } : {}),
    attestedAt,
    nonce,
    challenge,
    round,
  };
}

/**
 * The status's `learnerKeys`: the live released pods' bindings, plus the earlier entries,
 * revoked once they stop counting. A key whose node was quarantined after it was attested is
 * revoked from the quarantine on (the failing verdict's time, not when the member noticed the
 * pod go); a key whose pod is gone otherwise, from now. Revoked entries are kept (the newest
 * MAX_REVOKED_KEYS) so the hub can still accept what such a learner sent before.
 */
export function learnerKeysStatus(
  previous: readonly LearnerKey[] | undefined,
  pods: readonly V1Pod[],
  quarantine: (node: string) => { at: number; reasons: string[] } | undefined,
  now: number,
): LearnerKey[] {
  const revocation = (
    entry: LearnerKey,
    gone: boolean,
  ): Pick<LearnerKey, "revokedAt" | "revokedReason"> | undefined => {
    if (entry.revokedAt) return { revokedAt: entry.revokedAt, revokedReason: entry.revokedReason ?? "" };
    const q = quarantine(entry.node);
    if (q && q.at >= Date.parse(entry.attestedAt)) {
      return { revokedAt: apiTime(q.at), revokedReason: `NodeQuarantined:${q.reasons.join(",")}` };
    }
    return gone ? { revokedAt: apiTime(now), revokedReason: "LearnerDeleted" } : undefined;
  };
  const live = new Map<string, LearnerKey>();
  for (const pod of pods) {
    if (pod.metadata?.deletionTimestamp) continue;
    const entry = learnerKeyOfPod(pod);
    if (entry) live.set(entry.publicKey, entry);
  }
  const out: LearnerKey[] = [];
  const revoked: LearnerKey[] = [];
  for (const entry of live.values()) {
    const before = previous?.find((p) => p.publicKey === entry.publicKey);
    const r = revocation(before ?? entry, false);
    out.push(r ? { ...entry, ...r } : entry);
  }
  for (const entry of previous ?? []) {
    if (live.has(entry.publicKey)) continue;
    revoked.push({ ...entry, ...revocation(entry, true) });
  }
  revoked.sort((a, b) => (b.revokedAt ?? "").localeCompare(a.revokedAt ?? ""));
  return [...out, ...revoked.slice(0, MAX_REVOKED_KEYS)].sort(
    (a, b) => a.learner.localeCompare(b.learner) || a.attestedAt.localeCompare(b.attestedAt),
  );
}
