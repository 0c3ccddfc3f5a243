// Webhook signing secrets at rest. A channel's secret must be usable to sign, so it cannot be
// stored as a hash like the API's credentials: it is encrypted with AES-256-GCM (node:crypto)
// under the instance's secrets key, with the channel's id as additional data (a ciphertext
// copied to another channel's row does not decrypt). Stored bytes: a version byte, the key's
// 8-byte id, the 12-byte nonce, the ciphertext, the 16-byte tag.
//
// The key is SECRETS_KEY (32 bytes). Without it, a key is generated on first use and stored
// in instance_settings: then anyone who can read the database can decrypt the secrets, so
// the process warns at start (server.ts) that production wants SECRETS_KEY, kept apart from
// the database and its backups. A stored key remains readable for decrypting after
// SECRETS_KEY is set; new secrets (creation, rotation) are encrypted under SECRETS_KEY.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { Queryable } from '../db/pool.ts';
import { one } from '../store/query.ts';
import { tenantsSql } from '../store/queries.ts';

const VERSION = 1;
const GENERATED_KEY_SETTING = 'secrets_key_generated';

export type SecretsKey = { id: Buffer; key: Buffer };

function keyOf(key: Buffer): SecretsKey {
  if (key.length !== 32) throw new Error('a secrets key is 32 bytes');
  return { id: createHash('sha256').update('scanflow secrets key id:').update(key).digest().subarray(0, 8), key };
}

/** The keys a process encrypts with (the first) and decrypts with (any, by id). */
export class SecretBox {
  private readonly keys: SecretsKey[];
  /** Whether new secrets are encrypted under the key kept in the database itself. */
  readonly keyInDatabase: boolean;
  constructor(keys: Buffer[], keyInDatabase = false) {
    if (keys.length === 0) throw new Error('no secrets key');
    this.keys = keys.map(keyOf);
    this.keyInDatabase = keyInDatabase;
  }

  encrypt(plain: string, context: string): Buffer {
    const { id, key } = this.keys[0];
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, nonce);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return Buffer.concat([Buffer.from([VERSION]), id, nonce, body, cipher.getAuthTag()]);
  }

  decrypt(stored: Buffer, context: string): string {
    if (stored.length < 1 + 8 + 12 + 16 || stored[0] !== VERSION) throw new SecretUnreadable('not a secret this version stored');
    const id = stored.subarray(1, 9);
    const k = this.keys.find((x) => x.id.equals(id));
    if (!k) throw new SecretUnreadable('encrypted under another secrets key (was SECRETS_KEY changed?); rotate the secret');
    const decipher = createDecipheriv('aes-256-gcm', k.key, stored.subarray(9, 21));
    decipher.setAAD(Buffer.from(context, 'utf8'));
    decipher.setAuthTag(stored.subarray(stored.length - 16));
    try {
      return Buffer.concat([decipher.update(stored.subarray(21, stored.length - 16)), decipher.final()]).toString('utf8');
    } catch {
      throw new SecretUnreadable('does not decrypt (altered, or stored for another channel)');
    }
  }
}

export class SecretUnreadable extends Error {}

/**
 * The SecretBox of a database: SECRETS_KEY first when set, and the generated key stored in
 * the database (generated now when there is no SECRETS_KEY and none is stored yet). One
 * primary-key read; not cached, so a process never holds another database's key.
 */
export async function secretBox(db: Queryable, configured: Buffer | null): Promise<SecretBox> {
  let stored = await one<{ value: string }>(db, tenantsSql.GetSetting, [GENERATED_KEY_SETTING]);
  if (!stored && !configured) {
    await one(db, tenantsSql.InsertSettingIfAbsent, [GENERATED_KEY_SETTING, JSON.stringify(randomBytes(32).toString('base64'))]);
    stored = await one<{ value: string }>(db, tenantsSql.GetSetting, [GENERATED_KEY_SETTING]);
  }
  return boxOf(configured, stored?.value ?? null);
}

/** The SecretBox of SECRETS_KEY and the stored generated key (base64, as instance_settings holds it). */
export function boxOf(configured: Buffer | null, generated: string | null): SecretBox {
  const keys = [configured, generated ? Buffer.from(generated, 'base64') : null].filter((k): k is Buffer => k !== null);
  if (keys.length === 0) throw new SecretUnreadable('cannot be read: no secrets key (set SECRETS_KEY as it was when the secret was made)');
  return new SecretBox(keys, !configured);
}

/** A new Standard Webhooks secret: whsec_ and 32 random bytes in base64. */
export function newSigningSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

/** What identifies a secret in lists without revealing it. */
export function secretPrefix(secret: string): string {
  return secret.slice(0, 'whsec_'.length + 4);
}
