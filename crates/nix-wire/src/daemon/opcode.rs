//! The worker protocol's operation codes (reference §4.1), the ones this
//! client sends.

pub(crate) const IS_VALID_PATH: u64 = 1;
pub(crate) const BUILD_PATHS: u64 = 9;
pub(crate) const ENSURE_PATH: u64 = 10;
pub(crate) const ADD_TEMP_ROOT: u64 = 11;
pub(crate) const ADD_INDIRECT_ROOT: u64 = 12;
pub(crate) const SET_OPTIONS: u64 = 19;
pub(crate) const QUERY_PATH_INFO: u64 = 26;
pub(crate) const QUERY_VALID_PATHS: u64 = 31;
pub(crate) const NAR_FROM_PATH: u64 = 38;
pub(crate) const ADD_TO_STORE_NAR: u64 = 39;
pub(crate) const QUERY_MISSING: u64 = 40;
pub(crate) const ADD_MULTIPLE_TO_STORE: u64 = 44;
