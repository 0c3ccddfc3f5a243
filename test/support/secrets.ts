import { randomInt } from 'node:crypto';

const UPPER_BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const BASE64 = `${ALPHANUMERIC}/+`;

/**
 * A random AWS key pair of the shape secretlint's preset looks for (never a real one).
 * The secret's last character is alphanumeric: secretlint's AWSSecretAccessKey pattern ends
 * with a word boundary, so a secret ending in "/" or "+" (1 in 32 of random ones) followed by
 * a quote is not reported, and a test planting it would fail by chance.
 */
export function plantedAwsKeys(): { id: string; secret: string } {
  let id = 'AKIA';
  for (let i = 0; i < 16; i++) id += UPPER_BASE32[randomInt(UPPER_BASE32.length)];
  let secret = '';
  for (let i = 0; i < 39; i++) secret += BASE64[randomInt(BASE64.length)];
  secret += ALPHANUMERIC[randomInt(ALPHANUMERIC.length)];
  return { id, secret };
}
