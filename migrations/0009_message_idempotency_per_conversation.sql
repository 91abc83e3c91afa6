-- message.send / message.forward idempotency is per (sender, conversation): the same client_msg_id
-- sent into another conversation is another message, and a retry never finds a message of a
-- conversation the sender may have left. sender_id stays first, so the index still serves the FK
-- (ON DELETE SET NULL when a user is deleted) as the old one did.

ALTER TABLE messages DROP CONSTRAINT messages_sender_id_client_msg_id_key;
ALTER TABLE messages
    ADD CONSTRAINT messages_sender_conversation_client_msg_id_key
    UNIQUE (sender_id, conversation_id, client_msg_id);
