-- Idempotency keys (Idempotency-Key header, src/api/idempotency.ts): a retried POST with the
-- same key answers what the first one answered and creates nothing new. Keys are per
-- tenant and kept 24 hours; an expired key behaves as new.
--
--   processing ──(the handler's transaction commits; same transaction)──► committed
--   committed ──(the response is stored)──► completed        (4xx: processing ─► completed)
--   processing ──(5xx, or never committed and older than the lease)──► released / taken over
--
-- `committed` is written by the transaction that does the request's work, so "the work is
-- done" and "the key says so" commit together: a key found committed but not completed
-- means the process died between its commit and storing the answer, and the request is
-- never carried out again.

CREATE TABLE idempotency_keys (
  tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  key                   text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
  -- SHA-256 of the method, path and canonical body: the same key with another request is 422.
  request_hash          bytea NOT NULL,
  status                text NOT NULL DEFAULT 'processing' CHECK (status IN ('processing', 'committed', 'completed')),
  -- The request holding the reservation; a takeover changes it, and the marker of the
  -- request that lost it then fails (idempotency_key_commit), rolling its work back.
  owner                 uuid NOT NULL,
  reserved_at           timestamptz NOT NULL DEFAULT now(),
  response_status       integer CHECK (response_status BETWEEN 100 AND 599),
  response_content_type text,
  response_body         bytea,
  created_at            timestamptz NOT NULL DEFAULT now(),
  completed_at          timestamptz,
  PRIMARY KEY (tenant_id, key),
  CHECK ((status = 'completed') = (response_status IS NOT NULL AND response_body IS NOT NULL))
);
-- The purge deletes keys older than 24 hours.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Queued by every transaction a request with an Idempotency-Key opens (db/transaction.ts):
-- marks the key committed, or fails the transaction when the request no longer holds it.
CREATE FUNCTION idempotency_key_commit(p_tenant_id uuid, p_key text, p_owner uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE idempotency_keys SET status = 'committed'
  WHERE tenant_id = p_tenant_id AND key = p_key AND owner = p_owner AND status IN ('processing', 'committed');
  IF NOT FOUND THEN
    RAISE EXCEPTION 'the Idempotency-Key % is no longer reserved by this request', p_key
      USING ERRCODE = 'SFI01', HINT = 'another request took the key over';
  END IF;
END;
$$;
