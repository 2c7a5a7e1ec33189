//! wasimoff-js
