-- Provider webhook calls seen (issue 20, 2b): each signed call's token (Mailgun's `token`)
-- is accepted once, across processes, until it could no longer pass the freshness check.
CREATE TABLE webhook_tokens (
    provider   TEXT NOT NULL,
    token      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (provider, token)
);
CREATE INDEX webhook_tokens_expiry ON webhook_tokens (expires_at);
