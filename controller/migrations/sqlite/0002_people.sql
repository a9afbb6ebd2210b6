-- Accounts, what shares say, full-text search, availability and history (SQLite).
-- Keep in step with ../postgres/0002_people.sql.
ALTER TABLE users ADD COLUMN password_hash TEXT;          -- argon2id PHC string; NULL: token only
ALTER TABLE users ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN bio TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN label TEXT NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX api_tokens_user ON api_tokens(user_id);

ALTER TABLE shares ADD COLUMN title TEXT NOT NULL DEFAULT '';
ALTER TABLE shares ADD COLUMN kind TEXT NOT NULL DEFAULT 'other';
ALTER TABLE shares ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE shares ADD COLUMN tags TEXT NOT NULL DEFAULT '';        -- normalised, space-separated
ALTER TABLE shares ADD COLUMN private BIGINT NOT NULL DEFAULT 0;
-- Title, description and tags as search tokens (lowercase, accents folded, one space between),
-- made by the controller so both backends index exactly the same words.
ALTER TABLE shares ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
UPDATE shares SET title = name WHERE title = '';
CREATE INDEX shares_user ON shares(user_id);
CREATE TABLE share_tags (
    tag TEXT NOT NULL,
    share_id BIGINT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
    PRIMARY KEY (tag, share_id)
);
CREATE INDEX share_tags_share ON share_tags(share_id);

-- An external-content FTS5 index over shares.search_text, kept in step by triggers.
CREATE VIRTUAL TABLE share_search USING fts5(
    search_text, content='shares', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER shares_search_insert AFTER INSERT ON shares BEGIN
    INSERT INTO share_search(rowid, search_text) VALUES (new.id, new.search_text);
END;
CREATE TRIGGER shares_search_delete AFTER DELETE ON shares BEGIN
    INSERT INTO share_search(share_search, rowid, search_text) VALUES ('delete', old.id, old.search_text);
END;
CREATE TRIGGER shares_search_update AFTER UPDATE OF search_text ON shares BEGIN
    INSERT INTO share_search(share_search, rowid, search_text) VALUES ('delete', old.id, old.search_text);
    INSERT INTO share_search(rowid, search_text) VALUES (new.id, new.search_text);
END;

-- Live appliances holding the file's scarcest chunk, kept by the controller's availability
-- task so search can rank by it without touching holdings.
ALTER TABLE files ADD COLUMN availability BIGINT NOT NULL DEFAULT 0;
CREATE INDEX files_availability ON files(availability);

-- Completed downloads and stream starts. No foreign key to files: history outlives a file.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id),
    file_id BLOB NOT NULL,
    kind TEXT NOT NULL,               -- download | view
    at BIGINT NOT NULL
);
CREATE INDEX events_file ON events(file_id, kind, user_id);
CREATE INDEX events_user ON events(user_id, at);
