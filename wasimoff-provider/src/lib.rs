//! wasimoff-provider
