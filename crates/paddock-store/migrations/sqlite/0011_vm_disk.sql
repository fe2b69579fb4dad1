-- The size of a VM's writable layer. 0 for VMs made before sizes
-- existed: their layer stays where it was, unlimited.
ALTER TABLE vms ADD COLUMN disk_mb INTEGER NOT NULL DEFAULT 0;
