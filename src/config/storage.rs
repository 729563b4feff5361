//! Storage settings: `RECORDINGS_STORAGE` and its `__` identity settings.
//! (Filled in by the Blob upload work.)

use super::{ConfigError, Lookup};

/// Where archives go and how we authenticate there.
#[derive(Debug, Clone)]
pub struct StorageSettings {}

/// Reads the storage settings, when present.
pub fn load(_lookup: &impl Lookup) -> Result<Option<StorageSettings>, ConfigError> {
    Ok(None)
}
