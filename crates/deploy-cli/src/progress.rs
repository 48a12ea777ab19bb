//! Renders copy progress: a progress bar on a terminal (bytes, paths, rate,
//! ETA), JSON lines with `--json`, nothing otherwise.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix_deploy::copy::{CompressionMethod, CopyEvent, CopyReport};
use serde_json::{json, Value};
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
            CopyEvent::PathsDone { paths } => done += paths.len(),
            CopyEvent::PathStarted { .. } | CopyEvent::DaemonLog { .. } => {}
            ref transport => {
                if let Some(line) = transport_line(transport).filter(|_| mode != Mode::Json) {
                    bar.println(format!("{node}: {line}"));
                }
            }
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
            json!({"event": "pathsDone", "node": node, "paths": paths.len()})
        }
        CopyEvent::DaemonLog { text } => json!({"event": "daemonLog", "node": node, "text": text}),
        transport => transport_json(node, transport).unwrap_or(Value::Null),
    }
}

/// What a transport event (link, compression) says, without the node.
pub fn transport_line(event: &CopyEvent) -> Option<String> {
    Some(match event {
        CopyEvent::Link {
            rtt,
            bytes_per_second,
            window,
            connections,
        } => format!(
            "link: {:.1} ms round trip, {}/s{}: {connections} connections",
            rtt.as_secs_f64() * 1000.0,
            indicatif::HumanBytes(*bytes_per_second),
            window
                .map(|w| format!(", SSH window {}", indicatif::HumanBytes(w)))
                .unwrap_or_default()
        ),
        CopyEvent::LinkUnmeasured { reason } => {
            format!("link not measured ({reason}): copying as over a fast link")
        }
        CopyEvent::Compression { method, reason } => format!("compression: {method} ({reason})"),
        CopyEvent::Substituted {
            skipped: Some(reason),
            ..
        } => format!("not substituting ({reason}): uploading everything"),
        CopyEvent::Substituted {
            paths, nar_bytes, ..
        } => format!(
            "fetched {paths} paths ({}) from its own binary caches",
            indicatif::HumanBytes(*nar_bytes)
        ),
        _ => return None,
    })
}

/// The JSON of a transport event (link, compression).
pub fn transport_json(node: &str, event: &CopyEvent) -> Option<Value> {
    Some(match event {
        CopyEvent::Link {
            rtt,
            bytes_per_second,
            window,
            connections,
        } => json!({"event": "link", "node": node, "rttSeconds": rtt.as_secs_f64(),
            "bytesPerSecond": bytes_per_second, "windowBytes": window, "connections": connections}),
        CopyEvent::LinkUnmeasured { reason } => {
            json!({"event": "linkUnmeasured", "node": node, "reason": reason})
        }
        CopyEvent::CompressionLevel { level } => {
            json!({"event": "compressionLevel", "node": node, "level": level})
        }
        CopyEvent::Compression { method, reason } => {
            let (name, level) = match method {
                CompressionMethod::None => ("none", None),
                CompressionMethod::Zlib => ("zlib", None),
                CompressionMethod::Zstd { level } => ("zstd", Some(*level)),
            };
            json!({"event": "compression", "node": node, "method": name, "level": level, "reason": reason})
        }
        CopyEvent::Substituted {
            paths,
            nar_bytes,
            skipped,
        } => {
            json!({"event": "substituted", "node": node, "paths": paths, "narBytes": nar_bytes, "skipped": skipped})
        }
        _ => return None,
    })
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
