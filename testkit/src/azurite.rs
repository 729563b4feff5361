//! Azurite launcher (in progress).
