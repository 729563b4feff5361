//! ACS credentials: `ACS_CONNECTION_STRING`, or an endpoint plus managed identity.
//! (Filled in by the ACS download work.)

use super::{ConfigError, Lookup};

/// How we authenticate to Azure Communication Services.
#[derive(Debug, Clone)]
pub struct AcsSettings {}

/// Reads the ACS settings, when present.
pub fn load(_lookup: &impl Lookup) -> Result<Option<AcsSettings>, ConfigError> {
    Ok(None)
}
