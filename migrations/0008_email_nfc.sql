-- Emails are now stored Unicode-normalised (NFC, then lower-cased; see auth/validation.py), so the
-- NFC and NFD spellings of one address are one account under users_email_key (lower(email)).
-- Rows stored before were lower-cased but not normalised: bring them to NFC here.
--
-- Where several accounts share one normalised address (the same address registered twice in two
-- spellings, the bug this fixes), none of them is changed: merging accounts is a human decision.
-- Logins then reach the one already in NFC, if any; the others are listed by the warning below.
WITH normalised AS (
    SELECT id,
           normalize(email, NFC) AS nfc,
           count(*) OVER (PARTITION BY lower(normalize(email, NFC))) AS sharing
    FROM users
)
UPDATE users u
SET email = n.nfc, updated_at = now()
FROM normalised n
WHERE u.id = n.id AND n.sharing = 1 AND u.email <> n.nfc;

DO $$
DECLARE
    clashing text;
BEGIN
    SELECT string_agg(id::text, ', ' ORDER BY id) INTO clashing
    FROM (
        SELECT id, count(*) OVER (PARTITION BY lower(normalize(email, NFC))) AS sharing FROM users
    ) s
    WHERE sharing > 1;
    IF clashing IS NOT NULL THEN
        RAISE WARNING 'users sharing one email once Unicode-normalised, left unchanged: %', clashing;
    END IF;
END
$$;
