//! wasimoff-broker
