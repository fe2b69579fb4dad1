-- The node (paddock process with sandboxes) a VM runs on: each node's
-- sweeps, metering and restarts touch its own VMs only (sqlite 0019).
ALTER TABLE vms ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
CREATE INDEX vms_by_node ON vms(node_id, status);
