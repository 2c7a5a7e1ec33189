//! Every `wasimoff ...` command shown in the README and docs is accepted by the CLI: its
//! subcommand and flags exist and its arguments parse (run against an unreachable broker, so
//! nothing runs; a usage error is exit 2 with clap's `Usage:`). Docs cannot drift from the
//! flags again unnoticed.

use std::path::Path;

use crate::support::{root, text};

/// The Markdown files whose shell blocks are checked.
fn documents() -> Vec<std::path::PathBuf> {
    let root = root();
    let mut files = vec![
        root.join("README.md"),
        root.join("wasimoff-client/README.md"),
    ];
    for dir in [
        "docs",
        "examples",
        "examples/node-provider",
        "examples/tasks",
    ] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            files.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "md")),
            );
        }
    }
    files.sort();
    files
}

/// The `wasimoff` invocations in the shell code blocks of `markdown`: (line, argv after the
/// program name). Continuation lines are joined; comments, pipes, `;`, `&&` and redirections
/// end a command.
fn commands(markdown: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let mut in_shell = false;
    let mut pending = String::new();
    let mut start = 0;
    for (number, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_shell = !in_shell && matches!(info.trim(), "sh" | "bash" | "console" | "shell");
            continue;
        }
        if !in_shell {
            continue;
        }
        if pending.is_empty() {
            start = number + 1;
        }
        let line = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        let code = whole.split(" #").next().unwrap_or_default();
        for part in code.split(['|', ';']).flat_map(|p| p.split("&&")) {
            let part = part.trim();
            let rest = part
                .strip_prefix("wasimoff ")
                .or_else(|| part.strip_prefix("cargo run -p wasimoff-client -- "));
            let Some(rest) = rest else { continue };
            let Some(words) = shlex::split(rest) else {
                panic!("line {start}: cannot split {rest:?}");
            };
            let mut argv = Vec::new();
            let mut words = words.into_iter();
            while let Some(word) = words.next() {
                if matches!(word.as_str(), ">" | "<" | "2>" | ">>") {
                    words.next();
                } else if !word.starts_with('>') && !word.starts_with("2>") {
                    argv.push(word);
                }
            }
            found.push((start, argv));
        }
    }
    found
}

#[test]
fn every_documented_wasimoff_command_parses() {
    let mut checked = 0;
    for file in documents() {
        let Ok(markdown) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file
            .strip_prefix(root())
            .unwrap_or(Path::new("?"))
            .display();
        for (line, argv) in commands(&markdown) {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasimoff"))
                .args(&argv)
                .current_dir(root())
                // Nothing can run: every command that parses fails to connect instead.
                .env("WASIMOFF_BROKER", "http://127.0.0.1:1")
                .env_remove("WASIMOFF_TOKEN")
                .env_remove("WASIMOFF_CA_CERT")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let stderr = text(&out.stderr);
            assert!(
                !(out.status.code() == Some(2) && stderr.contains("Usage:")),
                "{name}:{line}: `wasimoff {}` is not a valid command:\n{stderr}",
                argv.join(" ")
            );
            checked += 1;
        }
    }
    // The README and quickstart alone show more than a dozen commands.
    assert!(checked >= 15, "only {checked} commands found");
}

#[test]
fn the_extractor_finds_commands_and_drops_what_is_not_theirs() {
    let markdown = "text\n```sh\n# a comment\nwasimoff run a.wasm --env K=v x  # note\n\
        echo hi | wasimoff run b.wasm stdin > out.txt\nwasimoff run c.wasm \\\n    --timeout 5 y\n\
        ```\n```rust\nwasimoff not shell\n```\n";
    let found = commands(markdown);
    let argvs: Vec<Vec<&str>> = found
        .iter()
        .map(|(_, a)| a.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        argvs,
        [
            vec!["run", "a.wasm", "--env", "K=v", "x"],
            vec!["run", "b.wasm", "stdin"],
            vec!["run", "c.wasm", "--timeout", "5", "y"],
        ]
    );
    assert_eq!(found[2].0, 6);
}
