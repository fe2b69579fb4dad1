-- Layers made by build steps, keyed by the step and everything before it.
CREATE TABLE build_cache (
    key         TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    media_type  TEXT NOT NULL,
    diff_id     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
