-- Per-conversation metadata as a JSON object (e.g. the session's `tracing` configuration).

ALTER TABLE conversations ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
