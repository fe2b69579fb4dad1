-- PostgreSQL's shared request buckets (its 0005). A SQLite store is one
-- process's, which keeps its buckets in memory: the table stays empty
-- here, and exists so both backends share one schema (and a store moved
-- between them finds every table on both sides).
CREATE TABLE request_buckets (
    account_id TEXT PRIMARY KEY NOT NULL,
    tokens     REAL NOT NULL,
    at         INTEGER NOT NULL,
    granted    REAL NOT NULL
);
