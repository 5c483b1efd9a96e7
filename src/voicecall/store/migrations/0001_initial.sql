-- Initial schema. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Timestamps are fixed-width ISO-8601 UTC text (2026-11-21T05:42:51.123456Z): they sort chronologically in both.
-- JSON values are kept as text. Item and response ids are unique per conversation (clients may choose item ids).

CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    model       TEXT,
    voice       TEXT,
    transport   TEXT NOT NULL,
    client      TEXT,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    title       TEXT,
    cost_usd    DOUBLE PRECISION NOT NULL DEFAULT 0,
    item_count  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE items (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    position        DOUBLE PRECISION NOT NULL,
    role            TEXT,
    type            TEXT NOT NULL,
    text            TEXT,
    audio_ms        INTEGER,
    truncated       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TEXT NOT NULL,
    done_at         TEXT,
    extra           TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (conversation_id, id)
);

CREATE TABLE responses (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    status          TEXT NOT NULL,
    status_details  TEXT,
    usage           TEXT,
    latency         TEXT NOT NULL DEFAULT '{}',
    cost_usd        DOUBLE PRECISION NOT NULL DEFAULT 0,
    model           TEXT,
    created_at      TEXT NOT NULL,
    done_at         TEXT,
    PRIMARY KEY (conversation_id, id)
);
