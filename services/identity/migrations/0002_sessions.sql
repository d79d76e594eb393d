-- Sessions: every refresh token belongs to a family, the session a login began. A refresh
-- consumes its token and issues the next one in the same family; presenting a consumed
-- token again means it was stolen or replayed, and revokes the whole family. A family ends
-- at its absolute expiry however often it is refreshed. Tokens issued before families
-- existed have none and are refused (their users sign in again once).
CREATE TABLE refresh_families (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    -- Unix milliseconds: the session's absolute end.
    expires_at BIGINT NOT NULL,
    -- 0 = live, 1 = revoked (signed out, signed out everywhere, reuse detected, disabled).
    revoked BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE INDEX refresh_families_user_id ON refresh_families (user_id);

ALTER TABLE refresh_tokens ADD COLUMN family_id TEXT;

CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);

-- 1 = the account may not sign in (a retired demo account, say); 0 = it may.
ALTER TABLE users ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
