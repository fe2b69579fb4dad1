-- A mount may show a directory inside its volume (the definitions
-- surface's `volumes[].subpath`) instead of the volume's root.
ALTER TABLE attachments ADD COLUMN subpath TEXT;
