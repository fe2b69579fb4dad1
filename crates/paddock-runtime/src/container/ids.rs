//! Host id ranges of sandboxes' user namespaces.
//!
//! Each container sandbox owns one range of `count` host ids, a slot
//! above `base`; no two sandboxes whose run dir exists (running, or
//! stopped with their files kept) share one, so one sandbox's files are
//! never another's. A sandbox's range is written in its run dir (`ids`)
//! when first given and read back on every later start, so its upper
//! layer keeps its owners across stops and server restarts; the slots in
//! use are rebuilt from those files when the provider starts.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use paddock_agent_protocol::config::IdMap;
use paddock_core::RuntimeError;

/// The file in a run dir that records the sandbox's range.
const IDS_FILE: &str = "ids";

/// Where sandboxes' ranges start and how large each is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRangeConfig {
    /// The first host id of the first range. At least `count`, so that a
    /// mapped id is never also an id of the sandbox's own view (which is
    /// how packing a layer tells them apart).
    pub base: u32,
    /// Ids per sandbox: 65,536 covers every id an image uses (`nobody`
    /// is 65534).
    pub count: u32,
}

impl Default for IdRangeConfig {
    fn default() -> Self {
        Self {
            base: 1 << 30,
            count: 1 << 16,
        }
    }
}

impl IdRangeConfig {
    /// Refuses a layout whose ranges would overlap the sandbox view, wrap
    /// past the largest id, or hold too few ids for an image.
    pub fn validate(&self) -> Result<(), String> {
        if self.count < 65_536 {
            return Err(format!(
                "each sandbox needs at least 65536 ids, not {}",
                self.count
            ));
        }
        if self.base < self.count {
            return Err(format!(
                "the first host id ({}) must be at least the ids per sandbox ({})",
                self.base, self.count
            ));
        }
        if self.slots() == 0 {
            return Err(format!(
                "no range of {} ids fits above {}",
                self.count, self.base
            ));
        }
        Ok(())
    }

    /// How many ranges fit below the largest valid id (`u32::MAX` is
    /// "no id" to the kernel).
    fn slots(&self) -> u32 {
        (u32::MAX - 1 - self.base) / self.count.max(1)
    }

    fn map_of(&self, slot: u32) -> IdMap {
        IdMap {
            host_base: self.base + slot * self.count,
            count: self.count,
        }
    }

    fn slot_of(&self, map: IdMap) -> Option<u32> {
        let offset = map.host_base.checked_sub(self.base)?;
        (map.count == self.count && offset % self.count == 0).then_some(offset / self.count)
    }
}

/// The slots in use, and the layout they are cut from.
#[derive(Debug)]
pub struct IdRanges {
    config: IdRangeConfig,
    used: Mutex<BTreeSet<u32>>,
}

impl IdRanges {
    /// The allocator, with the slot of every run dir under `sandboxes`
    /// already taken.
    pub fn load(config: IdRangeConfig, sandboxes: &Path) -> Self {
        let used = fs::read_dir(sandboxes)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| read(&e.path()))
            .filter_map(|map| config.slot_of(map))
            .collect();
        Self {
            config,
            used: Mutex::new(used),
        }
    }

    fn used(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The range of the sandbox whose run dir is `run`: the one it
    /// already has, or the lowest free one, recorded there.
    pub fn for_run_dir(&self, run: &Path) -> Result<IdMap, RuntimeError> {
        if let Some(map) = read(run) {
            if let Some(slot) = self.config.slot_of(map) {
                self.used().insert(slot);
            }
            return Ok(map);
        }
        let mut used = self.used();
        let slot = (0..self.config.slots())
            .find(|s| !used.contains(s))
            .ok_or_else(|| {
                RuntimeError::Setup("every host id range for sandboxes is in use".into())
            })?;
        let map = self.config.map_of(slot);
        let file = run.join(IDS_FILE);
        fs::write(&file, format!("{} {}\n", map.host_base, map.count))
            .map_err(|e| RuntimeError::host(file.display().to_string(), e))?;
        used.insert(slot);
        Ok(map)
    }

    /// Frees the range of the run dir `run`, which is about to go.
    pub fn release(&self, run: &Path) {
        if let Some(slot) = read(run).and_then(|m| self.config.slot_of(m)) {
            self.used().remove(&slot);
        }
    }
}

/// The range recorded in the run dir `run`, if any.
pub fn read(run: &Path) -> Option<IdMap> {
    let text = fs::read_to_string(run.join(IDS_FILE)).ok()?;
    let mut parts = text.split_whitespace().map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(host_base)), Some(Ok(count))) => Some(IdMap { host_base, count }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_distinct_kept_and_reused_after_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = IdRangeConfig::default();
        let ranges = IdRanges::load(config, dir.path());
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(&a).expect("a");
        fs::create_dir_all(&b).expect("b");
        let ma = ranges.for_run_dir(&a).expect("a's range");
        let mb = ranges.for_run_dir(&b).expect("b's range");
        assert_ne!(ma, mb);
        assert_eq!(ma.host_base, config.base);
        assert_eq!(mb.host_base, config.base + config.count);
        assert_eq!(ranges.for_run_dir(&a).expect("again"), ma, "kept");

        // A restarted server sees both taken.
        let reloaded = IdRanges::load(config, dir.path());
        let c = dir.path().join("c");
        fs::create_dir_all(&c).expect("c");
        let mc = reloaded.for_run_dir(&c).expect("c's range");
        assert_eq!(mc.host_base, config.base + 2 * config.count);

        reloaded.release(&a);
        fs::remove_dir_all(&a).expect("remove a");
        let d = dir.path().join("d");
        fs::create_dir_all(&d).expect("d");
        assert_eq!(reloaded.for_run_dir(&d).expect("d's range"), ma);
    }

    #[test]
    fn bad_layouts_are_refused() {
        let ok = IdRangeConfig::default();
        assert!(ok.validate().is_ok());
        let small = IdRangeConfig { count: 1000, ..ok };
        assert!(small.validate().is_err());
        let low = IdRangeConfig { base: 1000, ..ok };
        assert!(low.validate().is_err());
        let high = IdRangeConfig {
            base: u32::MAX - 10,
            ..ok
        };
        assert!(high.validate().is_err());
    }
}
