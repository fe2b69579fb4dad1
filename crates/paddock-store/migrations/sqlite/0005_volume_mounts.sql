-- A read-only mount may show one of the volume's checkpoints instead of
-- its live content.
ALTER TABLE attachments ADD COLUMN checkpoint_id TEXT REFERENCES checkpoints(id);

-- At most one VM mounts a volume read-write.
CREATE UNIQUE INDEX attachments_one_writer ON attachments(volume_id) WHERE mode = 'rw';
