// Where deliveries may go (src/domain/destinations.ts, src/delivery/transport.ts): never to
// link-local, multicast or unspecified addresses, however written; with
// DELIVERY_PRIVATE_NETWORKS=deny not to loopback or private ones either, whether the URL
// names the address or a name that resolves to it. A real receiver on 127.0.0.1 shows that
// a refused request never reaches it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addressProblem } from '../src/domain/destinations.ts';
import { urlProblem } from '../src/domain/channels.ts';
import { postJson } from '../src/delivery/transport.ts';
import { HttpReceiver } from './support/receivers.ts';

describe('addresses deliveries never go to', () => {
  it('link-local (cloud metadata), multicast, broadcast and unspecified, in IPv4, IPv6 and IPv4-mapped IPv6', () => {
    for (const a of ['169.254.169.254', '169.254.0.1', '0.0.0.0', '224.0.0.1', '239.255.255.250', '255.255.255.255',
      '::', 'fe80::1', 'FE80::abcd', 'ff02::1', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe', '[fe80::1]']) {
      assert.match(addressProblem(a, 'allow') ?? '', /link-local, multicast or unspecified/, a);
      assert.match(addressProblem(a, 'deny') ?? '', /link-local, multicast or unspecified/, a);
    }
  });

  it('loopback and private ones only with DELIVERY_PRIVATE_NETWORKS=deny', () => {
    for (const a of ['127.0.0.1', '127.8.9.10', '10.0.0.5', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1',
      '::1', 'fd00::1', 'fc12::7', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.1.2.3']) {
      assert.equal(addressProblem(a, 'allow'), null, a);
      assert.match(addressProblem(a, 'deny') ?? '', /loopback or private address \(DELIVERY_PRIVATE_NETWORKS=deny\)/, a);
    }
  });

  it('public addresses always', () => {
    for (const a of ['8.8.8.8', '172.32.0.1', '100.128.0.1', '169.253.255.255', '2001:db8::1', '2606:4700::1111']) {
      assert.equal(addressProblem(a, 'allow'), null, a);
      assert.equal(addressProblem(a, 'deny'), null, a);
    }
  });

  it('a channel URL that writes such an address is refused when it is given; a name is checked when it is resolved', () => {
    assert.equal(urlProblem('http://169.254.169.254/latest/meta-data/'), 'must not point at 169.254.169.254 (a link-local, multicast or unspecified address)');
    assert.match(urlProblem('http://0xa9fea9fe/') ?? '', /169\.254\.169\.254 \(a link-local/, 'hexadecimal, as URL parsing reads it');
    assert.match(urlProblem('https://[::ffff:169.254.169.254]:8443/x') ?? '', /link-local/);
    assert.equal(urlProblem('http://127.0.0.1:8080/hook'), null, 'loopback is for the delivery setting to decide');
    assert.equal(urlProblem('https://metadata.example/'), null);
  });
});

describe('postJson refuses before connecting', () => {
  let receiver: HttpReceiver;
  before(async () => {
    receiver = await HttpReceiver.start();
  });
  after(async () => {
    await receiver.close();
  });

  it('with private networks allowed, a receiver on 127.0.0.1 gets the request', async () => {
    const r = await postJson(`${receiver.url}/hook`, '{"a":1}', { 'x-test': 'allowed' }, 5000, 'allow');
    assert.deepEqual([r.statusCode, r.error], [200, null]);
    assert.deepEqual(receiver.received.map((x) => [x.path, x.headers['x-test'], x.json]), [['/hook', 'allowed', { a: 1 }]]);
  });

  it('with DELIVERY_PRIVATE_NETWORKS=deny it never does: by address, and by a name that resolves to loopback', async () => {
    const before = receiver.received.length;
    const port = new URL(receiver.url).port;
    const byAddress = await postJson(`http://127.0.0.1:${port}/hook`, '{}', {}, 5000, 'deny');
    assert.deepEqual([byAddress.statusCode, byAddress.error], [null, '127.0.0.1 is a loopback or private address (DELIVERY_PRIVATE_NETWORKS=deny): deliveries never go there']);
    const byName = await postJson(`http://localhost:${port}/hook`, '{}', {}, 5000, 'deny');
    assert.equal(byName.statusCode, null);
    assert.match(byName.error ?? '', /^localhost: (127\.0\.0\.1|::1) is a loopback or private address/);
    assert.equal(receiver.received.length, before, 'nothing reached the receiver');
  });

  it('a link-local address is refused whatever the setting', async () => {
    const r = await postJson('http://169.254.169.254/latest/meta-data/', '{}', {}, 5000, 'allow');
    assert.equal(r.statusCode, null);
    assert.equal(r.error, 'url must not point at 169.254.169.254 (a link-local, multicast or unspecified address)');
  });
});
