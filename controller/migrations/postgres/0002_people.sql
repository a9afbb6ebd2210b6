-- Accounts, what shares say, full-text search, availability and history (PostgreSQL).
-- Keep in step with ../sqlite/0002_people.sql.
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN bio TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN label TEXT NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX api_tokens_user ON api_tokens(user_id);

ALTER TABLE shares ADD COLUMN title TEXT NOT NULL DEFAULT '';
ALTER TABLE shares ADD COLUMN kind TEXT NOT NULL DEFAULT 'other';
ALTER TABLE shares ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE shares ADD COLUMN tags TEXT NOT NULL DEFAULT '';
ALTER TABLE shares ADD COLUMN private BIGINT NOT NULL DEFAULT 0;
ALTER TABLE shares ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
UPDATE shares SET title = name WHERE title = '';
CREATE INDEX shares_user ON shares(user_id);
CREATE TABLE share_tags (
    tag TEXT NOT NULL,
    share_id BIGINT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
    PRIMARY KEY (tag, share_id)
);
CREATE INDEX share_tags_share ON share_tags(share_id);

-- The 'simple' configuration: search_text is already folded into plain tokens.
ALTER TABLE shares ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED;
CREATE INDEX shares_search ON shares USING GIN (search_tsv);

ALTER TABLE files ADD COLUMN availability BIGINT NOT NULL DEFAULT 0;
CREATE INDEX files_availability ON files(availability);

CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    file_id BYTEA NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX events_file ON events(file_id, kind, user_id);
CREATE INDEX events_user ON events(user_id, at);
