//! CPU time per thread from `/proc` (Linux), summed by process kind and thread name: where a
//! benchmark's CPU goes, for the browser provider's breakdown. Thread names are Chromium's own
//! (`CrRendererMain` is the page's main thread, `DedicatedWorker thread` a Web Worker, ...);
//! numbers at the end of a name are dropped so that pools of threads add up.

use std::collections::BTreeMap;

/// CPU seconds by `(process kind, thread name)`.
pub(crate) type Sample = BTreeMap<(String, String), f64>;

/// Clock ticks per second of `/proc/*/stat` (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS: f64 = 100.0;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `(comm, ppid, utime + stime in ticks)` of a `stat` file.
fn stat(text: &str) -> Option<(String, u32, u64)> {
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // After the name: state (3), ppid (4), ... utime (14), stime (15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, ppid, utime + stime))
}

/// Every process below `root` (its children, their children, ...), `root` included.
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((_, ppid, _)) = read(&format!("/proc/{pid}/stat")).and_then(|t| stat(&t)) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        at += 1;
    }
    found
}

/// What a Chromium process is: its `--type=` (renderer, utility, gpu-process, ...), `browser`
/// without one, or the program's name for anything else. Chromium rewrites its command line
/// (one string with spaces), so the flags are looked for in all of it.
fn kind(pid: u32) -> String {
    let cmdline = read(&format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<&str> = cmdline
        .split(['\0', ' '])
        .filter(|w| !w.is_empty())
        .collect();
    let comm = read(&format!("/proc/{pid}/comm")).unwrap_or_default();
    if !comm.contains("chrom") {
        return comm.trim().to_owned();
    }
    let flag = |name: &str| words.iter().find_map(|w| w.strip_prefix(name));
    match (flag("--type="), flag("--utility-sub-type=")) {
        (Some(t), Some(s)) => format!("{t} ({s})"),
        (Some(t), None) => t.to_owned(),
        (None, _) => "browser".to_owned(),
    }
}

/// CPU seconds of every thread of `pids`, summed by process kind and thread name; `label`
/// replaces the process kind when given.
pub(crate) fn sample(pids: &[u32], label: Option<&str>) -> Sample {
    let mut out = Sample::new();
    for &pid in pids {
        let kind = label.map_or_else(|| kind(pid), str::to_owned);
        let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for thread in threads.flatten() {
            let path = thread.path().join("stat");
            let Some((comm, _, ticks)) = std::fs::read_to_string(path).ok().and_then(|t| stat(&t))
            else {
                continue;
            };
            let name = comm
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .trim_end();
            *out.entry((kind.clone(), name.to_owned())).or_default() += ticks as f64 / TICKS;
        }
    }
    out
}

/// The processes below `root` (e.g. chromedriver, whose children are Chromium's).
pub(crate) fn below(root: u32) -> Vec<u32> {
    tree(root).into_iter().filter(|&p| p != root).collect()
}

/// What happened between two samples, in CPU milliseconds per `per` (e.g. tasks), busiest
/// first; threads that did less than `floor` ms per unit are summed in one line.
pub(crate) fn report(before: &Sample, after: &Sample, per: f64, floor: f64) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .map(|(key, &secs)| {
            let spent = secs - before.get(key).copied().unwrap_or(0.0);
            (format!("{}: {}", key.0, key.1), spent * 1e3 / per)
        })
        .filter(|(_, ms)| *ms > 0.0)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (mut shown, rest): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, ms)| *ms >= floor);
    let rest: f64 = rest.iter().map(|(_, ms)| ms).sum();
    if rest > 0.0 {
        shown.push(("other threads".to_owned(), rest));
    }
    shown
}
