-- Users and their refresh tokens. Same SQL on SQLite and PostgreSQL: TEXT and BIGINT only.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    -- Comma-separated role names (each matches [a-z0-9_-]+).
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Only the SHA-256 (hex) of a refresh token is stored; the token itself never is.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    -- Unix milliseconds.
    expires_at BIGINT NOT NULL,
    -- 0 = active, 1 = revoked (rotated or logged out).
    revoked BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id);
