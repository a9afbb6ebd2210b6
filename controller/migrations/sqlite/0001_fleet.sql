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
-- Every chunk the controller has heard of gets a small integer ID, assigned in file order when
-- its file is registered (or when an appliance announces a chunk no file names). Holdings and
-- file_chunks refer to chunks by ID: appliances announce a file's chunks in about file order,
-- so holdings rows land near the end of the key range instead of on random pages. With 45-byte
-- random keys every 2048-row batch dirtied ~2000 pages; with IDs it dirties a handful.
--
-- Chunks are found by `h`, the first 8 bytes of their hash, and the rows' keys compared in
-- db.rs: an integer index is small enough to stay in cache and probes about twice as fast as
-- the 45-byte key's (the key stays UNIQUE so two registrations cannot race in a duplicate).
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    h BIGINT NOT NULL,                -- first 8 bytes of the chunk hash, big-endian, signed
    key BLOB NOT NULL UNIQUE          -- ChunkId key bytes (see common::id::ChunkId::key_bytes)
);
CREATE INDEX chunks_h ON chunks(h);
CREATE TABLE file_chunks (
    file_id BLOB NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    idx BIGINT NOT NULL,
    chunk BIGINT NOT NULL REFERENCES chunks(id),
    PRIMARY KEY (file_id, idx)
);
CREATE INDEX file_chunks_chunk ON file_chunks(chunk);
-- Chunk first: IDs follow file order, so a `have` delta's rows land at the end of the key
-- range however many nodes announce at once, and "who holds these chunks" (repair, file
-- views) is one range per chunk. The node index serves inventories and per-node counts. No
-- foreign key to chunks: the check would cost a probe per row on the hot path, and db.rs only
-- inserts IDs it has just looked up.
CREATE TABLE holdings (
    chunk BIGINT NOT NULL,            -- chunks.id
    node BIGINT NOT NULL,             -- nodes.num
    PRIMARY KEY (chunk, node)
) WITHOUT ROWID;
CREATE INDEX holdings_node ON holdings(node);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
