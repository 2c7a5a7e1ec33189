//! wasimoff-client
