-- Search listings in rank order straight from an index (PostgreSQL).
-- Keep in step with ../sqlite/0003_search_rank.sql, which says why.
ALTER TABLE shares ADD COLUMN rank_bucket BIGINT NOT NULL DEFAULT 0;
ALTER TABLE share_tags ADD COLUMN rank_bucket BIGINT NOT NULL DEFAULT 0;
ALTER TABLE share_tags ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
UPDATE shares SET rank_bucket = f.availability FROM files f WHERE f.id = shares.file_id;
UPDATE shares SET rank_bucket = 3 WHERE rank_bucket > 3;
UPDATE share_tags SET rank_bucket = s.rank_bucket, created_at = s.created_at FROM shares s WHERE s.id = share_tags.share_id;
CREATE INDEX shares_rank ON shares(rank_bucket DESC, created_at DESC, file_id);
CREATE INDEX shares_kind_rank ON shares(kind, rank_bucket DESC, created_at DESC, file_id);
CREATE INDEX share_tags_rank ON share_tags(tag, rank_bucket DESC, created_at DESC, share_id);

CREATE FUNCTION files_rank_bucket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE shares SET rank_bucket = LEAST(NEW.availability, 3) WHERE file_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER files_rank_bucket AFTER UPDATE OF availability ON files FOR EACH ROW
    WHEN (LEAST(OLD.availability, 3) <> LEAST(NEW.availability, 3))
    EXECUTE FUNCTION files_rank_bucket();

CREATE FUNCTION shares_rank_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.rank_bucket := COALESCE((SELECT LEAST(f.availability, 3) FROM files f WHERE f.id = NEW.file_id), 0);
    RETURN NEW;
END
$$;
CREATE TRIGGER shares_rank_insert BEFORE INSERT ON shares FOR EACH ROW EXECUTE FUNCTION shares_rank_insert();

CREATE FUNCTION shares_rank_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE share_tags SET rank_bucket = NEW.rank_bucket WHERE share_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER shares_rank_update AFTER UPDATE OF rank_bucket ON shares FOR EACH ROW
    WHEN (OLD.rank_bucket <> NEW.rank_bucket)
    EXECUTE FUNCTION shares_rank_update();

CREATE FUNCTION share_tags_rank_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT s.rank_bucket, s.created_at INTO NEW.rank_bucket, NEW.created_at FROM shares s WHERE s.id = NEW.share_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER share_tags_rank_insert BEFORE INSERT ON share_tags FOR EACH ROW EXECUTE FUNCTION share_tags_rank_insert();
