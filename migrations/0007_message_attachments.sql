-- Media attached to messages; whoever can see the message may download the media.

CREATE TABLE message_attachments (
    message_id uuid     NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    media_id   uuid     NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    position   smallint NOT NULL,
    PRIMARY KEY (message_id, media_id)
);
CREATE INDEX message_attachments_media_id_idx ON message_attachments (media_id);
