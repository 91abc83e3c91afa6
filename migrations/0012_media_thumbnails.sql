-- Thumbnails of uploaded images: a second object in the storage (WebP, or JPEG where the server's
-- Pillow has no WebP), at most 320 px on the longer side, EXIF orientation applied, metadata stripped.
-- An image whose thumbnail could not be made (corrupt, too many pixels) simply has no row here.

CREATE TABLE media_thumbnails (
    -- The primary key is also the index of the foreign key.
    media_id     uuid    PRIMARY KEY REFERENCES media (id) ON DELETE CASCADE,
    storage_key  text    NOT NULL UNIQUE,
    content_type text    NOT NULL CHECK (content_type IN ('image/webp', 'image/jpeg')),
    size         integer NOT NULL CHECK (size > 0),
    sha256       text    NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    width        integer NOT NULL CHECK (width BETWEEN 1 AND 320),
    height       integer NOT NULL CHECK (height BETWEEN 1 AND 320)
);
