-- The node a volume's files are on: a VM that mounts it runs there. ''
-- is a volume made before nodes existed (the first node's).
ALTER TABLE volumes ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
