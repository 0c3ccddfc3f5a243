-- Step output (API.md Part 2 "Step output (logs)"): what a command's tool printed, uploaded
-- by its agent in append-only chunks keyed by (command, byte offset) and read back by
-- concatenating them. Bounded per command by LOG_MAX_BYTES: past it the stored output ends
-- with a truncation marker and later chunks are acknowledged but not stored.
--
-- Two offset spaces, equal until the cap: the agent uploads in the space of the bytes it
-- has sent (received_bytes); readers read the stored bytes (stored_bytes, the kept content
-- plus the marker). While not truncated received = kept = stored.

-- One row per command with output: the lengths an append is guarded by. A separate table
-- rather than columns of commands, so appends (one per flush of every running tool) neither
-- lock nor bloat the commands rows that claims, transitions and expiry update.
CREATE TABLE command_outputs (
  command_id      uuid PRIMARY KEY,
  tenant_id       uuid NOT NULL,
  -- Bytes the agent has sent: the offset its next chunk must start at.
  received_bytes  bigint NOT NULL DEFAULT 0 CHECK (received_bytes >= 0),
  -- Bytes of the agent's output that are stored (at most LOG_MAX_BYTES).
  kept_bytes      bigint NOT NULL DEFAULT 0 CHECK (kept_bytes >= 0 AND kept_bytes <= received_bytes),
  -- Bytes stored for readers: the kept output, then the marker once truncated.
  stored_bytes    bigint NOT NULL DEFAULT 0 CHECK (stored_bytes >= kept_bytes),
  truncated       boolean NOT NULL DEFAULT false,
  created_at      timestamptz NOT NULL DEFAULT now(),
  -- The last append: retention looks only at outputs untouched for its whole period.
  updated_at      timestamptz NOT NULL DEFAULT now(),
  -- Set when retention removed the chunks; the lengths stay, so a read can say so.
  purged_at       timestamptz,
  CHECK (truncated OR (received_bytes = kept_bytes AND kept_bytes = stored_bytes)),
  FOREIGN KEY (tenant_id, command_id) REFERENCES commands (tenant_id, id) ON DELETE CASCADE
);
-- Retention's candidates: outputs not yet purged, oldest last append first.
CREATE INDEX command_outputs_retention_idx ON command_outputs (updated_at) WHERE purged_at IS NULL;

-- The stored bytes, append-only: each chunk at its offset in the stored (reader) space. The
-- truncation marker is a chunk of its own at kept_bytes; a second one conflicts on the key.
CREATE TABLE command_output_chunks (
  command_id   uuid NOT NULL REFERENCES command_outputs (command_id) ON DELETE CASCADE,
  byte_offset  bigint NOT NULL CHECK (byte_offset >= 0),
  tenant_id    uuid NOT NULL,
  data         bytea NOT NULL CHECK (octet_length(data) > 0),
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (command_id, byte_offset)
);
