-- One row per registered upload of an app. `seq` orders an app's releases (1, 2, …) without
-- trusting clocks; the digest is unique per app, so registering twice is a no-op.
CREATE TABLE control_releases (
    app TEXT NOT NULL,
    digest TEXT NOT NULL,
    seq BIGINT NOT NULL,
    deps TEXT,
    bytes BIGINT NOT NULL,
    published_by TEXT NOT NULL,
    published_at_ms BIGINT NOT NULL,
    git_commit TEXT,
    provenance TEXT NOT NULL,
    signature TEXT,
    PRIMARY KEY (app, digest),
    UNIQUE (app, seq)
);
