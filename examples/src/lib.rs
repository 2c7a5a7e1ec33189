//! wasimoff-examples
