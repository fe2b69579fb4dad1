-- API keys managed over the API (/v1/api-keys): a description, and an
-- expiry after which the key answers 401.
ALTER TABLE api_keys ADD COLUMN description TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
