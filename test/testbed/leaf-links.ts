// The hub's view of the regions' leaf links, from its monitoring endpoint, and ways to cut
// one: the hub's system account kicks the connection, as an operator (or a flaky network)
// would, and the region dials back on its own after its reconnect delay; or the hub refuses
// the region's credential until told otherwise (blockLeafLink), a link down for as long as
// a test needs.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { TestbedError } from "./errors.ts";
import type { Testbed } from "./harness.ts";
import { hubConfig, hubSystemUser } from "./nats.ts";
import { readDescription, type TestbedDescription } from "./testbed.ts";

export interface LeafLink {
  id: number;
  region: string;
  inBytes: number;
  outBytes: number;
  inMsgs: number;
}

interface Leafz {
  server_id: string;
  leafs?: { id: number; name: string; in_bytes: number; out_bytes: number; in_msgs: number }[];
}

async function leafz(tb: Testbed): Promise<Leafz> {
  const res = await fetch(`${tb.description.nats.hub.monitorUrl}/leafz`);
  if (!res.ok) throw new Error(`hub /leafz answered ${res.status}`);
  return (await res.json()) as Leafz;
}

export async function leafLink(tb: Testbed, region: string): Promise<LeafLink | undefined> {
  const z = await leafz(tb);
  const l = z.leafs?.find((x) => x.name === region);
  return l && { id: l.id, region, inBytes: l.in_bytes, outBytes: l.out_bytes, inMsgs: l.in_msgs };
}

/** Closes the region's current leaf connection at the hub; resolves with the link that was cut. */
export async function cutLeafLink(tb: Testbed, region: string): Promise<LeafLink | undefined> {
  const z = await leafz(tb);
  const l = z.leafs?.find((x) => x.name === region);
  if (!l) return undefined;
  const sys = hubSystemUser(tb.description.nats.hub.admin);
  const nc = await connect({ servers: tb.description.nats.hub.url, user: sys.user, pass: sys.password });
  try {
    await nc.request(`$SYS.REQ.SERVER.${z.server_id}.KICK`, JSON.stringify({ cid: l.id }), { timeout: 5000 });
  } finally {
    await nc.close();
  }
  return { id: l.id, region, inBytes: l.in_bytes, outBytes: l.out_bytes, inMsgs: l.in_msgs };
}

// Taking a link down for real, for longer than a kick: the region redials within a second of
// a cut, so a cut alone is an outage of about a second. Here the hub stops accepting the
// region's leaf credential (its user leaves the hub's config, reloaded with SIGHUP, which
// nats-server applies without dropping anyone else), and then the current connection is
// kicked: every redial is refused with "Authorization Violation" until the user is back.
// The region keeps serving its own domain meanwhile, so its learners still publish there.

interface Varz {
  config_load_time: string;
  out_bytes: number;
  out_client_bytes: number;
}

async function varz(monitorUrl: string): Promise<Varz> {
  const res = await fetch(`${monitorUrl}/varz`);
  if (!res.ok) throw new Error(`${monitorUrl}/varz answered ${res.status}`);
  return (await res.json()) as Varz;
}

/** The hub's config as `up` writes it (testbed.ts), rebuilt from the description, without the leaf users of `without`. */
function hubConfFor(d: TestbedDescription, without: readonly string[] = []): string {
  const port = (url: string) => Number(new URL(url).port);
  return hubConfig({
    clientPort: port(d.nats.hub.url),
    leafPort: port(d.nats.hub.leafUrl),
    monitorPort: port(d.nats.hub.monitorUrl),
    storeDir: join(d.stateDir, "nats", "hub-js"),
    admin: d.nats.hub.admin,
    leafUsers: Object.fromEntries(
      Object.entries(d.nats.regions)
        .filter(([r]) => !without.includes(r))
        .map(([r, x]) => [r, x.leaf]),
    ),
  });
}

/** The description as it is now: a restart since the harness read it changes the hub's pid. */
async function freshDescription(tb: Testbed): Promise<TestbedDescription> {
  const d = await readDescription(tb.description.stateDir);
  if (!d) throw new TestbedError("TestbedNotUp", `no testbed in ${tb.description.stateDir}`);
  return d;
}

/** Writes the hub's config and has the running hub reload it; resolves once it has. */
async function reloadHubConfig(d: TestbedDescription, conf: string): Promise<void> {
  const pid = d.processes.find((p) => p.name === "hub/nats-server")?.pid;
  if (pid === undefined) throw new TestbedError("TestbedNotUp", "the hub's nats-server is not running");
  const before = (await varz(d.nats.hub.monitorUrl)).config_load_time;
  await writeFile(join(d.stateDir, "nats", "hub.conf"), conf, { mode: 0o600 });
  process.kill(pid, "SIGHUP");
  const deadline = Date.now() + 15_000;
  while ((await varz(d.nats.hub.monitorUrl)).config_load_time === before) {
    if (Date.now() > deadline) {
      throw new TestbedError(
        "ServerNotReady",
        `the hub's nats-server did not reload its config within 15 s; see ${join(d.logsDir, "hub-nats-server.log")}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Takes the region's leaf link down until restoreLeafLink: the hub refuses the region's leaf
 * credential and kicks the connection. Resolves once the link has stayed down for `holdMs`
 * (default 2.5 s, two of the region's one-second redials refused), with the link as it was
 * when cut. The caller must restore it (in a teardown, too): the testbed's other tests need it.
 */
export async function blockLeafLink(
  tb: Testbed,
  region: string,
  opts: { holdMs?: number } = {},
): Promise<LeafLink | undefined> {
  const d = await freshDescription(tb);
  const current = await readFile(join(d.stateDir, "nats", "hub.conf"), "utf8");
  // Rewrite only what the testbed itself wrote, so restoring puts back exactly that.
  if (current !== hubConfFor(d) && current !== hubConfFor(d, [region])) {
    throw new TestbedError(
      "HubConfigChanged",
      `${join(d.stateDir, "nats", "hub.conf")} is not what the testbed generated; refusing to rewrite it (run 'cli.ts down' and 'up' to regenerate)`,
    );
  }
  await reloadHubConfig(d, hubConfFor(d, [region]));
  const cut = await cutLeafLink(tb, region);
  const holdMs = opts.holdMs ?? 2500;
  const deadline = Date.now() + 15_000;
  let downSince: number | undefined;
  while (downSince === undefined || Date.now() - downSince < holdMs) {
    if (Date.now() > deadline) {
      throw new TestbedError(
        "LeafLinkStuck",
        `${region}'s leaf link did not stay down for ${holdMs} ms after its user was removed from the hub's config`,
      );
    }
    if (await leafLink(tb, region)) downSince = undefined;
    else downSince ??= Date.now();
    await new Promise((r) => setTimeout(r, 100));
  }
  return cut;
}

/** Lets the region's leaf link log in again; resolves with the new link once the region has redialled. */
export async function restoreLeafLink(tb: Testbed, region: string, timeoutMs = 30_000): Promise<LeafLink> {
  const d = await freshDescription(tb);
  await reloadHubConfig(d, hubConfFor(d));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const link = await leafLink(tb, region);
    if (link) return link;
    if (Date.now() > deadline) {
      throw new TestbedError(
        "LeafLinkStuck",
        `${region} did not redial the hub within ${timeoutMs / 1000} s of its leaf user being restored; see ${join(d.logsDir, `${region}-nats-server.log`)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Message bytes the region's server has sent over leaf links since it started, every
 * connection counted (cut ones too): what left the region toward the hub. The hub's /leafz
 * counts per connection and starts again at zero when either side restarts.
 */
export async function regionLeafBytesSent(tb: Testbed, region: string): Promise<number> {
  const monitorUrl = tb.description.nats.regions[region]?.monitorUrl;
  if (!monitorUrl) throw new TestbedError("UnknownComponent", `no NATS server for ${region}`);
  const v = await varz(monitorUrl);
  return v.out_bytes - v.out_client_bytes;
}
