-- A VM's CPU quota in thousandths of a CPU when it is a fraction of its
-- whole CPUs (`resources.cpu: "500m"`); 0: its whole CPUs.
ALTER TABLE vms ADD COLUMN cpu_millis INTEGER NOT NULL DEFAULT 0;
