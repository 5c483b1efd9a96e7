-- Last activity per conversation (close_dangling ends crashed conversations there) and the indexes that
-- listing, ordering and start-up recovery use.

ALTER TABLE conversations ADD COLUMN last_activity_at TEXT;

UPDATE conversations SET last_activity_at = COALESCE(
    (SELECT MAX(t) FROM (
        SELECT COALESCE(i.done_at, i.created_at) AS t FROM items i WHERE i.conversation_id = conversations.id
        UNION ALL
        SELECT COALESCE(r.done_at, r.created_at) AS t FROM responses r WHERE r.conversation_id = conversations.id
    ) activity),
    started_at);

CREATE INDEX conversations_started_idx ON conversations (started_at, id);
CREATE INDEX conversations_open_idx ON conversations (ended_at);
CREATE INDEX items_order_idx ON items (conversation_id, position);
