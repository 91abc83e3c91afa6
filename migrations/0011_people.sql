-- People: an @handle to be found by (unique whatever its case) and an avatar (an uploaded image).

-- Stored lower-case (3 to 32 of a-z, 0-9 and _, starting with a letter); NULL: no handle.
ALTER TABLE users ADD COLUMN handle text CHECK (handle ~ '^[a-z][a-z0-9_]{2,31}$');
-- Unique whatever the case, and the index `user.lookup` by handle uses (lower(handle) = $1).
CREATE UNIQUE INDEX users_handle_key ON users (lower(handle));

-- The user's avatar; deleting the file clears it.
ALTER TABLE users ADD COLUMN avatar_media_id uuid REFERENCES media (id) ON DELETE SET NULL;
-- The FK (deleting a media row), and "is this file someone's avatar?" (media access).
CREATE INDEX users_avatar_media_id_idx ON users (avatar_media_id);
