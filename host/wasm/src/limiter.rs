//! Caps the linear memory a run may grow to, and remembers its peak.

use wasmtime::ResourceLimiter;

/// Most table elements a run may have; tables hold function references and
/// a well-behaved plugin needs a few thousand at most.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// A [`ResourceLimiter`] over the total of every linear memory of one store.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    total_bytes: usize,
    /// The size a growth asked for when it was refused.
    denied: Option<usize>,
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            total_bytes: 0,
            denied: None,
        }
    }

    /// Bytes of linear memory at their highest (memories never shrink).
    pub(crate) fn peak(&self) -> u64 {
        self.total_bytes as u64
    }

    /// Total the guest asked for when the cap refused it, if ever.
    pub(crate) fn denied(&self) -> Option<usize> {
        self.denied
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let wanted = self
            .total_bytes
            .saturating_add(desired.saturating_sub(current));
        if wanted > self.max_bytes {
            self.denied = Some(wanted);
            return Ok(false);
        }
        self.total_bytes = wanted;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_growth_past_the_cap_across_memories() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(0, 30, None).unwrap());
        assert!(!limiter.memory_growing(60, 80, None).unwrap());
        assert_eq!(limiter.denied(), Some(110));
        assert_eq!(limiter.peak(), 90);
    }
}
