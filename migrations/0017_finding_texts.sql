-- The text `q` searches (a finding's title and path) moves out of findings into a narrow table
-- of its own, with the trigram index (issue 8, ingest speed).
--
-- findings_text_trgm_idx was on findings. A sighting moves last_seen_at, which an index sorts
-- by, so a re-ingest's UPDATE of a finding is never HOT: every index of findings gets a new
-- entry for the new row version, the trigram GIN index ~80 of them (one per trigram of title
-- and path), unchanged text or not. Measured on 50,000 findings (PostgreSQL's CPU time per
-- finding of ingestFindings, first ingest / re-ingest): 186 / 176 µs with it, 130 / 125 µs
-- without it. A row of finding_texts is written when a finding is created or its title or
-- path changes (rare: a tool rewords a rule, a moved file keeps its fingerprint).
--
-- Kept by triggers on findings, so that every way a finding is written keeps it: new findings
-- in one statement per statement (a transition table; an INSERT … ON CONFLICT DO UPDATE lists
-- only the rows it inserted), a changed title or path per row (the WHEN is checked per row;
-- the function runs only for a change). No foreign key: its insert check would lock each new
-- finding row (FOR KEY SHARE), a write per finding; deleted findings (with their asset or
-- tenant) take their texts with them in one statement.
CREATE TABLE finding_texts (
  finding_id uuid PRIMARY KEY,
  -- title, a newline (which q may not contain, so a match never spans the two), the path.
  text       text NOT NULL
);

INSERT INTO finding_texts (finding_id, text)
SELECT id, title || E'\n' || coalesce(location ->> 'path', '') FROM findings;

CREATE INDEX finding_texts_trgm_idx ON finding_texts USING gin (text gin_trgm_ops);
DROP INDEX findings_text_trgm_idx;

CREATE FUNCTION finding_texts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO finding_texts (finding_id, text)
  SELECT n.id, n.title || E'\n' || coalesce(n.location ->> 'path', '') FROM new_findings n;
  RETURN NULL;
END $$;

CREATE FUNCTION finding_texts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE finding_texts SET text = NEW.title || E'\n' || coalesce(NEW.location ->> 'path', '') WHERE finding_id = NEW.id;
  RETURN NULL;
END $$;

CREATE FUNCTION finding_texts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM finding_texts t USING gone_findings g WHERE t.finding_id = g.id;
  RETURN NULL;
END $$;

CREATE TRIGGER findings_texts_insert AFTER INSERT ON findings
  REFERENCING NEW TABLE AS new_findings FOR EACH STATEMENT EXECUTE FUNCTION finding_texts_insert();
CREATE TRIGGER findings_texts_update AFTER UPDATE OF title, location ON findings FOR EACH ROW
  WHEN (OLD.title IS DISTINCT FROM NEW.title OR OLD.location ->> 'path' IS DISTINCT FROM NEW.location ->> 'path')
  EXECUTE FUNCTION finding_texts_update();
CREATE TRIGGER findings_texts_delete AFTER DELETE ON findings
  REFERENCING OLD TABLE AS gone_findings FOR EACH STATEMENT EXECUTE FUNCTION finding_texts_delete();
