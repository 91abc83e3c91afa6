-- Agent turns are billed like chat answers but recorded as their own purpose, so usage history can
-- tell them apart.
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_purpose_check;
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_purpose_check
    CHECK (purpose IN ('answer', 'title', 'agent'));
