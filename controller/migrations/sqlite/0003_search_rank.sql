-- Search listings in rank order straight from an index (SQLite).
-- Keep in step with ../postgres/0003_search_rank.sql.
--
-- A share carries its file's availability bucket, MIN(availability, 3), the only part of
-- availability that ranking reads; a tag row carries its share's bucket and creation time.
-- For a listing without words every relevance is 1, so (bucket DESC, created_at DESC) is the
-- ranking itself, and the first page is the start of one index range instead of a sort of
-- every match. Triggers keep the copies exact in the statement that changes the original:
-- nothing in Rust writes these columns. Each index here is rewritten whenever a file's bucket
-- changes (a node going offline can change most of them), so there are only three: all, by
-- kind, by tag. An owner's listing sorts that owner's shares.
ALTER TABLE shares ADD COLUMN rank_bucket BIGINT NOT NULL DEFAULT 0;
ALTER TABLE share_tags ADD COLUMN rank_bucket BIGINT NOT NULL DEFAULT 0;
ALTER TABLE share_tags ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
UPDATE shares SET rank_bucket = (SELECT MIN(f.availability, 3) FROM files f WHERE f.id = shares.file_id);
UPDATE share_tags SET (rank_bucket, created_at) =
    (SELECT s.rank_bucket, s.created_at FROM shares s WHERE s.id = share_tags.share_id);
CREATE INDEX shares_rank ON shares(rank_bucket DESC, created_at DESC, file_id);
CREATE INDEX shares_kind_rank ON shares(kind, rank_bucket DESC, created_at DESC, file_id);
CREATE INDEX share_tags_rank ON share_tags(tag, rank_bucket DESC, created_at DESC, share_id);

CREATE TRIGGER files_rank_bucket AFTER UPDATE OF availability ON files
WHEN MIN(old.availability, 3) <> MIN(new.availability, 3) BEGIN
    UPDATE shares SET rank_bucket = MIN(new.availability, 3) WHERE file_id = new.id;
END;
-- A new file's availability is 0, the default: only a new share of a known file needs a copy.
CREATE TRIGGER shares_rank_insert AFTER INSERT ON shares
WHEN (SELECT availability FROM files WHERE id = new.file_id) > 0 BEGIN
    UPDATE shares SET rank_bucket = (SELECT MIN(f.availability, 3) FROM files f WHERE f.id = new.file_id)
    WHERE id = new.id;
END;
CREATE TRIGGER shares_rank_update AFTER UPDATE OF rank_bucket ON shares
WHEN old.rank_bucket <> new.rank_bucket BEGIN
    UPDATE share_tags SET rank_bucket = new.rank_bucket WHERE share_id = new.id;
END;
CREATE TRIGGER share_tags_rank_insert AFTER INSERT ON share_tags BEGIN
    UPDATE share_tags SET (rank_bucket, created_at) =
        (SELECT s.rank_bucket, s.created_at FROM shares s WHERE s.id = new.share_id)
    WHERE rowid = new.rowid;
END;
