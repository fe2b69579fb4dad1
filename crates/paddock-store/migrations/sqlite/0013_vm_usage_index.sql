-- An account's quota usage (VMs holding host resources, their memory and
-- vCPUs) is read on every create: this index holds exactly those rows, so
-- the read costs what the account runs, not every VM it ever had.
CREATE INDEX vms_live_by_account ON vms(account_id, status, memory_mb, vcpu_count)
    WHERE status IN ('creating', 'running', 'stopping');
