// Where a notification channel's requests may go (server-side request forgery: a tenant's
// webhook URL must not make the worker reach what only it can reach). Never: link-local
// addresses (169.254.0.0/16, where clouds serve instance metadata and credentials, and
// fe80::/10), "this host" (0.0.0.0/8, ::), multicast and broadcast. With
// DELIVERY_PRIVATE_NETWORKS=deny also loopback, the private ranges (RFC 1918, fc00::/7) and
// shared address space (100.64.0.0/10): for installations whose tenants must not reach the
// internal network. The default allows those, for receivers on the same host or network.
import { BlockList, isIP } from 'node:net';

export type PrivateNetworks = 'allow' | 'deny';

function blockList(ranges: [string, number][]): BlockList {
  const list = new BlockList();
  for (const [network, prefix] of ranges) list.addSubnet(network, prefix, network.includes(':') ? 'ipv6' : 'ipv4');
  return list;
}

const NEVER: [BlockList, string] = [blockList([
  ['0.0.0.0', 8], ['169.254.0.0', 16], ['224.0.0.0', 4], ['255.255.255.255', 32],
  ['::', 128], ['fe80::', 10], ['ff00::', 8],
]), 'a link-local, multicast or unspecified address'];

const PRIVATE: [BlockList, string] = [blockList([
  ['127.0.0.0', 8], ['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16], ['100.64.0.0', 10],
  ['::1', 128], ['fc00::', 7],
]), 'a loopback or private address (DELIVERY_PRIVATE_NETWORKS=deny)'];

/** An IPv4 address written as IPv6 (::ffff:a.b.c.d, or its hex form ::ffff:a9fe:a9fe) as IPv4. */
function unmapped(address: string): string {
  const a = address.toLowerCase();
  const dotted = /^(?:0{0,4}:){0,5}ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)?.[1] ?? /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)?.[1];
  if (dotted) return dotted;
  const hex = /^(?:0{0,4}:){0,5}ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(a) ?? /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(a);
  if (hex) {
    const [hi, lo] = [parseInt(hex[1], 16), parseInt(hex[2], 16)];
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return address;
}

/** What kind of address deliveries may not go to this IP address is, or null when they may. */
export function refusedKind(address: string, privateNetworks: PrivateNetworks): string | null {
  const ip = unmapped(address.replace(/^\[|\]$/g, '').replace(/%.*$/, ''));
  const family = isIP(ip);
  if (family === 0) return 'not an IP address';
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const [list, what] of privateNetworks === 'deny' ? [NEVER, PRIVATE] : [NEVER]) {
    if (list.check(ip, type)) return what;
  }
  return null;
}

/** Why a request may not go to this IP address, or null when it may. */
export function addressProblem(address: string, privateNetworks: PrivateNetworks): string | null {
  const kind = refusedKind(address, privateNetworks);
  return kind ? `${address} is ${kind}: deliveries never go there` : null;
}

/** The host of a URL as an IP address when it is written as one (brackets removed), else null. */
export function literalAddress(hostname: string): string | null {
  const h = hostname.replace(/^\[|\]$/g, '');
  return isIP(h) ? h : null;
}
