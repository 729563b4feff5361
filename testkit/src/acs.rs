//! ACS recording emulator (in progress).
