//! A `nats-server -js` for the tests and benchmarks of brokers that share NATS JetStream:
//! Debian's package (`cargo xtask ci` and `cargo xtask bench` install it), on an ephemeral
//! loopback port, with its store in a fresh temporary directory.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running `nats-server -js`; killed, and its store removed, when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    /// Where clients connect: `nats://127.0.0.1:<port>`.
    pub url: String,
    store: PathBuf,
}

impl NatsServer {
    /// Starts one and waits until it listens.
    ///
    /// # Panics
    /// If `nats-server` is not installed or does not start: the tests need it.
    pub fn start() -> NatsServer {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let store = std::env::temp_dir().join(format!(
            "wasimoff-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&store);
        let mut child = Command::new("nats-server")
            // `-p -1`: a random free port, which it then logs.
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start nats-server ({e}): `cargo xtask ci` installs it, or \
                     `apt-get install nats-server`"
                )
            });
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("nats-server ended before it listened");
            };
            if let Some((_, addr)) = line.split_once("Listening for client connections on ") {
                break format!("nats://{}", addr.trim());
            }
        };
        // Drain the rest, so that the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        NatsServer { child, url, store }
    }
}

impl NatsServer {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
