// The hub's view of the regions' leaf links, from its monitoring endpoint, and a way to cut
// one: the hub's system account kicks the connection, as an operator (or a flaky network)
// would; the region dials back on its own after its reconnect delay.
import { connect } from "@nats-io/transport-node";
import type { Testbed } from "./harness.ts";
import { hubSystemUser } from "./nats.ts";

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
