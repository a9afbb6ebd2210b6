-- Fleet, files and holdings (SQLite). Keep in step with ../postgres/0001_fleet.sql.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    is_admin BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_tokens (
    hash BLOB PRIMARY KEY,            -- blake3 of the token; the token itself is never stored
    user_id BIGINT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,              -- NodeId, 32 hex digits
    num BIGINT NOT NULL UNIQUE,       -- small number for the holdings table
    secret BLOB NOT NULL,             -- enrollment secret: MQTT password and MAC key root
    name TEXT,
    state TEXT NOT NULL,              -- enrolled | online | offline
    state_since BIGINT NOT NULL,
    boot_id BIGINT,
    have_seq BIGINT NOT NULL DEFAULT 0,
    needs_inventory BIGINT NOT NULL DEFAULT 1,
    data_addr TEXT,
    capacity_bytes BIGINT NOT NULL DEFAULT 0,
    used_bytes BIGINT NOT NULL DEFAULT 0,
    disk_free_bytes BIGINT NOT NULL DEFAULT 0,
    version TEXT,
    board TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE files (
    id BLOB PRIMARY KEY,              -- FileId, 32 bytes
    size BIGINT NOT NULL,
    chunk_bytes BIGINT NOT NULL,
    manifest BLOB NOT NULL,           -- postcard, checked against id before insert
    created_at BIGINT NOT NULL
);
CREATE TABLE shares (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id BLOB NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX shares_file ON shares(file_id);
CREATE TABLE file_chunks (
    file_id BLOB NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    idx BIGINT NOT NULL,
    chunk BLOB NOT NULL,              -- ChunkId key bytes (see common::id::ChunkId::key_bytes)
    PRIMARY KEY (file_id, idx)
);
CREATE INDEX file_chunks_chunk ON file_chunks(chunk);
-- Node first: a `have` delta's rows all land in its node's key range, which makes ingest
-- several times faster than a chunk-first key with a node index. Lookups by chunk probe
-- each node's range (`node IN (SELECT num FROM nodes) AND chunk = ...`): fleets are small.
CREATE TABLE holdings (
    node BIGINT NOT NULL,             -- nodes.num
    chunk BLOB NOT NULL,
    PRIMARY KEY (node, chunk)
) WITHOUT ROWID;
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
