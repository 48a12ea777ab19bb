//! Renders copy progress: a progress bar on a terminal (bytes, paths, rate,
//! ETA), JSON lines with `--json`, nothing otherwise.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix_deploy::copy::{CopyEvent, CopyReport};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar on stderr.
    Bar,
    /// One JSON object per event on stdout.
    Json,
    /// Only the final summary.
    Quiet,
}

impl Mode {
    /// `--json` wins; otherwise a bar when stderr is a terminal.
    pub fn pick(json: bool) -> Self {
        if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Quiet
        }
    }
}

/// Consumes the events of one copy to `node` until the sender is dropped.
pub async fn render(mode: Mode, node: String, mut rx: UnboundedReceiver<CopyEvent>) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if mode != Mode::Bar {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(node.clone());
    let (mut done, mut total) = (0usize, 0usize);
    let mut out = std::io::stdout();
    while let Some(event) = rx.recv().await {
        if mode == Mode::Json {
            let _ = writeln!(out, "{}", event_json(&node, &event));
        }
        match event {
            CopyEvent::Planned {
                missing_paths,
                missing_bytes,
                ..
            } => {
                total = missing_paths;
                bar.set_length(missing_bytes);
            }
            CopyEvent::BytesSent { bytes } => bar.inc(bytes),
            CopyEvent::PathsDone { paths } => done += paths,
            CopyEvent::Compressing { bytes_per_second } => {
                if mode != Mode::Json {
                    bar.println(format!(
                        "slow link ({}/s): compressing the rest",
                        indicatif::HumanBytes(bytes_per_second)
                    ));
                }
            }
            CopyEvent::PathStarted { .. } | CopyEvent::DaemonLog { .. } => {}
        }
        bar.set_message(format!("{done}/{total} paths"));
    }
    bar.finish_and_clear();
}

fn event_json(node: &str, event: &CopyEvent) -> serde_json::Value {
    match event {
        CopyEvent::Planned {
            closure_paths,
            present_paths,
            missing_paths,
            missing_bytes,
        } => json!({"event": "planned", "node": node, "closurePaths": closure_paths,
            "presentPaths": present_paths, "missingPaths": missing_paths, "missingBytes": missing_bytes}),
        CopyEvent::PathStarted { path, nar_size } => {
            json!({"event": "pathStarted", "node": node, "path": path.to_string(), "narSize": nar_size})
        }
        CopyEvent::BytesSent { bytes } => {
            json!({"event": "bytesSent", "node": node, "bytes": bytes})
        }
        CopyEvent::PathsDone { paths } => {
            json!({"event": "pathsDone", "node": node, "paths": paths})
        }
        CopyEvent::DaemonLog { text } => json!({"event": "daemonLog", "node": node, "text": text}),
        CopyEvent::Compressing { bytes_per_second } => {
            json!({"event": "compressing", "node": node, "bytesPerSecond": bytes_per_second})
        }
    }
}

/// The final summary: a JSON object with `--json`, else a sentence on stderr.
pub fn summary(mode: Mode, node: &str, r: &CopyReport) {
    if mode == Mode::Json {
        println!(
            "{}",
            json!({"event": "done", "node": node, "closurePaths": r.closure_paths,
                "presentPaths": r.present_paths, "sentPaths": r.sent_paths,
                "sentBytes": r.sent_bytes, "seconds": r.elapsed.as_secs_f64()})
        );
    } else {
        eprintln!(
            "{node}: sent {} paths ({}) in {:.2?}; {} of {} were already there",
            r.sent_paths,
            indicatif::HumanBytes(r.sent_bytes),
            r.elapsed,
            r.present_paths,
            r.closure_paths
        );
    }
}
