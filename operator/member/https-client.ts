// The member's outbound HTTPS: NRAS, its JWKS, the RIM service and OCSP responders. Every call
// has a deadline and a size cap, because a slow or endless answer from any of them must not hold
// a node's challenge (and the node lock) for ever; a CA may replace the system's roots for
// private services and the testbed's stand-ins.
import { request } from "node:https";

export interface HttpsAnswer {
  status: number;
  body: Buffer;
  contentType?: string;
}

export interface HttpsOptions {
  method: "GET" | "POST";
  body?: string | Uint8Array;
  /** Sent with a body. */
  contentType?: string;
  accept?: string;
  /** PEM of the CAs to trust instead of the system's. */
  ca?: string;
  timeoutMs: number;
  maxBytes: number;
}

/** Resolves with any HTTP status; rejects when there is no complete answer (refused, TLS, timeout, too large). */
export function httpsRequest(url: string, opts: HttpsOptions): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      reject(new Error(`${JSON.stringify(url)} is not a URL`));
      return;
    }
    if (target.protocol !== "https:") {
      reject(new Error(`${url} is not an https URL`));
      return;
    }
    const body = opts.body === undefined ? undefined : Buffer.from(opts.body);
    const req = request(
      target,
      {
        method: opts.method,
        ...(opts.ca ? { ca: opts.ca } : {}),
        timeout: opts.timeoutMs,
        headers: {
          ...(opts.accept ? { accept: opts.accept } : {}),
          ...(body !== undefined
            ? {
                "content-type": opts.contentType ?? "application/octet-stream",
                "content-length": body.length,
              }
            : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > opts.maxBytes) {
            req.destroy(new Error(`the answer is larger than ${opts.maxBytes} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks),
            ...(res.headers["content-type"] ? { contentType: res.headers["content-type"] } : {}),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}
