// How the plugin fails: a reason code a script can grep for, a sentence saying what to do,
// and the exit code kubectl passes on (1: the command ran and failed, 2: it was called wrong).
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export class PluginError extends Error {
  readonly reason: string;
  readonly exitCode: number;

  constructor(reason: string, message: string, exitCode: number = EXIT_FAILURE) {
    super(`${reason}: ${message}`);
    this.reason = reason;
    this.exitCode = exitCode;
  }
}

export const usageError = (message: string): PluginError =>
  new PluginError("InvalidArguments", message, EXIT_USAGE);

/** Which cluster a request went to, so the reason says whose access is missing. */
export type Target = "hub" | "region";

interface ApiFailure {
  code?: number;
  body?: unknown;
  cause?: { code?: string };
  message?: string;
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** The API server's own message, when its error body is a Status object. */
function statusMessage(body: unknown): string {
  if (typeof body === "string") {
    try {
      return statusMessage(JSON.parse(body));
    } catch {
      return body.slice(0, 300);
    }
  }
  if (body && typeof body === "object" && "message" in body) return String(body.message);
  return "";
}

/**
 * Turns a Kubernetes client failure into a PluginError. `what` names the request ("list
 * FederatedRuns in team-a"); `notFound` is the reason and advice when the object is missing.
 */
export function fromApiError(
  err: unknown,
  target: Target,
  what: string,
  notFound?: { reason: string; message: string },
): PluginError {
  if (err instanceof PluginError) return err;
  const e = (err ?? {}) as ApiFailure;
  const server = statusMessage(e.body);
  const detail = server ? ` (${server})` : "";
  const Target = target === "hub" ? "Hub" : "Region";
  const where = target === "hub" ? "the hub" : "the region's cluster";
  switch (e.code) {
    case 401:
      return new PluginError(
        "Unauthorized",
        `${where} did not accept the credential of this kubeconfig context; log in again or pick another --context${detail}`,
      );
    case 403:
      return new PluginError(
        `No${Target}Access`,
        `cannot ${what}: this kubeconfig context is not allowed to${detail}; use a ${target === "hub" ? "hub" : "region"} admin context (--kubeconfig/--context) or ask for that permission`,
      );
    case 404:
      if (notFound) return new PluginError(notFound.reason, notFound.message);
      return new PluginError("NotFound", `cannot ${what}: not found${detail}`);
  }
  const netCode = e.cause?.code ?? (err as { code?: unknown })?.code;
  if (typeof netCode === "string" && NETWORK_CODES.has(netCode)) {
    return new PluginError(
      `${Target}Unreachable`,
      `cannot ${what}: ${where} did not answer (${netCode}); check the server address of the kubeconfig context and that the API server is up`,
    );
  }
  const message = e.message ?? String(err);
  if (/ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|certificate|socket hang up/i.test(message)) {
    return new PluginError(
      `${Target}Unreachable`,
      `cannot ${what}: ${where} did not answer (${message}); check the server address of the kubeconfig context and that the API server is up`,
    );
  }
  return new PluginError(
    "ApiError",
    `cannot ${what}: ${typeof e.code === "number" ? `HTTP ${e.code} ` : ""}${message}${detail}`,
  );
}
