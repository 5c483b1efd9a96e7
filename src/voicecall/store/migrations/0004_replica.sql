-- Which replica (server.replicaId) runs a conversation: at start-up a replica closes only the conversations it
-- left open itself, and a live replica closes those of a replica that died (several replicas, one database).

ALTER TABLE conversations ADD COLUMN replica TEXT;

CREATE INDEX conversations_replica_open_idx ON conversations (replica, ended_at);
