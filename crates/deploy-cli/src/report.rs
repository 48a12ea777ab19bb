//! Renders deploy results: the plan of a dry run, `--diff` previews, live
//! progress and the per-node summary table; as text for people or JSON.

use std::io::IsTerminal;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix_deploy::cache::{CacheError, CacheEvent, Lacking};
use nix_deploy::copy::CopyEvent;
use nix_deploy::deploy::{DeployEvent, NodeError, NodeOutcome, NodePlan, NodeStatus};
use nix_deploy::diff::{NodeDiff, Uplink};
use nix_deploy::fanout::Source;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

/// How much to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// JSON on stdout.
    Json,
    /// Only failures.
    Quiet,
    /// Progress bars on a terminal and the summary table.
    Normal,
    /// Also a line per step of each node.
    Verbose,
}

impl Verbosity {
    /// From the command-line flags.
    pub fn new(quiet: bool, verbose: u8, json: bool) -> Self {
        match (json, quiet, verbose) {
            (true, _, _) => Verbosity::Json,
            (_, true, _) => Verbosity::Quiet,
            (_, _, 0) => Verbosity::Normal,
            _ => Verbosity::Verbose,
        }
    }
}

fn target(plan: &NodePlan) -> String {
    plan.target.to_string()
}

/// Warnings about the cluster stages (on stderr, or as JSON lines).
pub fn warnings(warnings: &[deploy_cluster::ingress::IngressWarning], as_json: bool) {
    for w in warnings {
        if as_json {
            println!("{}", json!({"event": "warning", "message": w.to_string()}));
        } else {
            eprintln!("warning: {w}");
        }
    }
}

/// What a dry run or `--goal build` would do per node.
pub fn plans(plans: &[NodePlan], stages: &dyn Fn(&str) -> Vec<String>, as_json: bool) {
    if as_json {
        let nodes: Vec<Value> = plans
            .iter()
            .map(|p| json!({"name": p.name, "target": target(p), "profilePath": p.profile_path, "profile": p.profile.to_string(), "stages": stages(&p.name)}))
            .collect();
        println!("{}", json!({ "nodes": nodes }));
        return;
    }
    for p in plans {
        println!(
            "{}: {} → {} ({})",
            p.name,
            p.profile,
            p.profile_path,
            target(p)
        );
        for step in stages(&p.name) {
            println!("  {}", step.replace('\n', "\n  "));
        }
    }
}

fn signed(n: i128) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", HumanBytes(n.unsigned_abs() as u64))
}

fn diff_json(d: &NodeDiff) -> Value {
    let pkg = |p: &nix_deploy::diff::Package| json!({"name": p.name, "version": p.version, "path": p.path.to_string()});
    json!({
        "oldProfile": d.old_profile.as_ref().map(ToString::to_string),
        "newProfile": d.new_profile.to_string(),
        "added": d.added.iter().map(pkg).collect::<Vec<_>>(),
        "removed": d.removed.iter().map(pkg).collect::<Vec<_>>(),
        "changed": d.changed.iter().map(|c| json!({"name": c.name, "oldVersion": c.old_version, "newVersion": c.new_version})).collect::<Vec<_>>(),
        "oldClosureBytes": d.old_closure_bytes,
        "newClosureBytes": d.new_closure_bytes,
        "transferPaths": d.transfer_paths(),
        "transferBytes": d.transfer_bytes(),
        "empty": d.is_empty(),
    })
}

/// `name version`, or just the name when it has no version.
fn label(p: &nix_deploy::diff::Package) -> String {
    if p.version.is_empty() {
        p.name.clone()
    } else {
        format!("{} {}", p.name, p.version)
    }
}

/// `--diff` results.
/// `cache`: the binary cache's URL and what it lacks (or why it could not
/// be asked), when the inventory has one.
pub fn diffs(
    diffs: &[(String, Result<NodeDiff, NodeError>)],
    as_json: bool,
    fan_out: bool,
    cache: Option<(&str, Result<Lacking, CacheError>)>,
) {
    let uplink = Uplink::of(diffs.iter().filter_map(|(_, r)| r.as_ref().ok()));
    let through = if fan_out {
        uplink.bytes
    } else {
        uplink.direct_bytes
    };
    if as_json {
        let nodes: Vec<Value> = diffs
            .iter()
            .map(|(name, r)| match r {
                Ok(d) => json!({"name": name, "diff": diff_json(d)}),
                Err(e) => json!({"name": name, "error": e.to_string()}),
            })
            .collect();
        let uplink = json!({"fanOut": fan_out, "paths": uplink.paths, "bytes": through,
            "fanOutBytes": uplink.bytes, "directBytes": uplink.direct_bytes});
        let cache = cache.map(|(url, lacking)| match lacking {
            Ok(l) => json!({"url": url, "paths": l.paths, "missingPaths": l.missing,
                "missingBytes": l.missing_nar_bytes}),
            Err(e) => json!({"url": url, "error": e.to_string()}),
        });
        println!(
            "{}",
            json!({ "nodes": nodes, "uplink": uplink, "cache": cache })
        );
        return;
    }
    for (name, r) in diffs {
        let d = match r {
            Ok(d) => d,
            Err(e) => {
                println!("{name}: cannot preview: {e}");
                continue;
            }
        };
        if d.is_empty() {
            println!("{name}: no changes");
            continue;
        }
        match &d.old_profile {
            Some(old) => println!("{name}: {old} → {}", d.new_profile),
            None => println!("{name}: new profile {}", d.new_profile),
        }
        for p in &d.added {
            println!("  + {}", label(p));
        }
        for p in &d.removed {
            println!("  - {}", label(p));
        }
        for c in &d.changed {
            println!("  ~ {} {} → {}", c.name, c.old_version, c.new_version);
        }
        println!(
            "  closure {} → {} ({}); to transfer: {} paths, {}",
            HumanBytes(d.old_closure_bytes),
            HumanBytes(d.new_closure_bytes),
            signed(i128::from(d.new_closure_bytes) - i128::from(d.old_closure_bytes)),
            d.transfer_paths(),
            HumanBytes(d.transfer_bytes())
        );
    }
    if diffs.len() > 1 && uplink.paths > 0 {
        match fan_out {
            true => println!(
                "uplink: {} paths, {} from here, each once (fan-out; {} with a copy to each node)",
                uplink.paths,
                HumanBytes(uplink.bytes),
                HumanBytes(uplink.direct_bytes)
            ),
            false => println!(
                "uplink: {} from here, a copy to each node ({} with fan-out)",
                HumanBytes(uplink.direct_bytes),
                HumanBytes(uplink.bytes)
            ),
        }
    }
    match cache {
        Some((url, Ok(l))) => println!(
            "binary cache {url}: lacks {} of {} paths ({}): pushed once, then the nodes \
             substitute from it",
            l.missing,
            l.paths,
            HumanBytes(l.missing_nar_bytes)
        ),
        Some((url, Err(e))) => println!(
            "binary cache {url}: can't be asked ({e}): the deploy would copy to the nodes \
             as if there were none"
        ),
        None => {}
    }
}

/// Live progress: a bar per node on a terminal, JSON lines with `--json`,
/// a line per step with `-v`.
pub async fn progress(mut rx: UnboundedReceiver<DeployEvent>, verbosity: Verbosity) {
    let as_json = verbosity == Verbosity::Json;
    let bars_shown = verbosity == Verbosity::Normal && std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if bars_shown {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:20} [{bar:30}] {bytes}/{total_bytes} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut bars: std::collections::BTreeMap<String, ProgressBar> = Default::default();
    while let Some(event) = rx.recv().await {
        if as_json {
            if let Some(v) = event_json(&event) {
                println!("{v}");
            }
        }
        if verbosity == Verbosity::Verbose {
            if let Some(line) = event_line(&event) {
                eprintln!("{line}");
            }
        }
        match event {
            DeployEvent::NodeStarted { name } => {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(name.clone());
                bar.set_message("connecting");
                bars.insert(name, bar);
            }
            DeployEvent::Copy { name, event } => {
                if let Some(bar) = bars.get(&name) {
                    match event {
                        CopyEvent::Planned {
                            missing_bytes,
                            missing_paths,
                            ..
                        } => {
                            bar.set_length(missing_bytes);
                            bar.set_message(format!("copying {missing_paths} paths"));
                        }
                        CopyEvent::BytesSent { bytes } => bar.inc(bytes),
                        _ => {}
                    }
                }
            }
            DeployEvent::Switched { name } => {
                if let Some(bar) = bars.get(&name) {
                    bar.set_message("profile switched");
                }
            }
            DeployEvent::WaitingForLock { name, holder } => {
                if let Some(bar) = bars.get(&name) {
                    bar.set_message(format!("waiting for another deploy ({holder})"));
                }
                // Waiting is worth saying even without bars or -v.
                if verbosity == Verbosity::Normal && !bars_shown {
                    eprintln!("{name}: waiting for another deploy to finish ({holder})");
                }
            }
            DeployEvent::Confirmed { name } => {
                if let Some(bar) = bars.get(&name) {
                    bar.set_message("confirmed");
                }
            }
            DeployEvent::Stage {
                name,
                stage,
                message,
            } => {
                if let Some(bar) = bars.get(&name) {
                    bar.set_message(format!("{stage}: {message}"));
                }
            }
            DeployEvent::InstallingNix { name } => {
                if let Some(bar) = bars.get(&name) {
                    bar.set_message("no Nix: installing it");
                }
            }
            DeployEvent::Cache {
                event:
                    CacheEvent::Checked {
                        missing,
                        missing_nar_bytes,
                        ..
                    },
            } => {
                let bar = multi.add(ProgressBar::new(missing_nar_bytes));
                bar.set_style(style.clone());
                bar.set_prefix(CACHE_BAR);
                bar.set_message(format!("pushing {missing} paths"));
                bars.insert(CACHE_BAR.to_owned(), bar);
            }
            DeployEvent::Cache {
                event: CacheEvent::NarUploaded { nar_size, .. },
            } => {
                if let Some(bar) = bars.get(CACHE_BAR) {
                    bar.inc(nar_size);
                }
            }
            DeployEvent::Cache {
                event: CacheEvent::Available { .. },
            } => {}
            DeployEvent::CachePushed { .. } => {
                if let Some(bar) = bars.get(CACHE_BAR) {
                    bar.set_message("pushed; nodes substitute from it");
                }
            }
            DeployEvent::CacheFailed { cache, error } => {
                if let Some(bar) = bars.get(CACHE_BAR) {
                    bar.set_message("failed: copying to nodes directly");
                }
                if verbosity == Verbosity::Normal {
                    let text = cache_failed_text(&cache, &error);
                    match bars_shown {
                        true => {
                            let _ = multi.println(text);
                        }
                        false => eprintln!("{text}"),
                    }
                }
            }
            DeployEvent::Source { name, source } => {
                if let Some(bar) = bars.get(&name) {
                    bar.set_message(source_text(&source));
                }
                // A planned feed that fell through is worth saying.
                if matches!(source, Source::Direct { .. })
                    && verbosity == Verbosity::Normal
                    && !bars_shown
                {
                    eprintln!("{name}: {}", source_text(&source));
                }
            }
        }
    }
    for bar in bars.values() {
        bar.finish_and_clear();
    }
}

/// The progress bar of the push to the binary cache.
const CACHE_BAR: &str = "binary cache";

fn cache_failed_text(cache: &str, error: &str) -> String {
    format!("binary cache {cache}: push failed, copying to the nodes directly: {error}")
}

/// Where a node's paths come from, in words.
fn source_text(source: &Source) -> String {
    match source {
        Source::Seed => "fed from here, as the fan-out's seed".to_owned(),
        Source::Node(from) => format!("fed by {from}, node to node"),
        Source::Direct { reason } => format!("fed from here directly ({reason})"),
    }
}

fn event_line(event: &DeployEvent) -> Option<String> {
    Some(match event {
        DeployEvent::NodeStarted { name } => format!("{name}: connecting"),
        DeployEvent::Switched { name } => format!("{name}: profile switched"),
        DeployEvent::WaitingForLock { name, holder } => {
            format!("{name}: waiting for another deploy to finish ({holder})")
        }
        DeployEvent::Confirmed { name } => format!("{name}: confirmed"),
        DeployEvent::Stage {
            name,
            stage,
            message,
        } => format!("{name}: {stage}: {message}"),
        DeployEvent::InstallingNix { name } => format!("{name}: no Nix: installing it"),
        DeployEvent::Source { name, source } => format!("{name}: {}", source_text(source)),
        DeployEvent::Cache {
            event:
                CacheEvent::Checked {
                    paths,
                    missing,
                    missing_nar_bytes,
                },
        } => format!(
            "binary cache: {} of {paths} paths present, pushing {missing} ({})",
            paths - missing,
            HumanBytes(*missing_nar_bytes)
        ),
        DeployEvent::Cache {
            event: CacheEvent::NarUploaded {
                path, file_size, ..
            },
        } => format!("binary cache: pushed {path} ({})", HumanBytes(*file_size)),
        DeployEvent::Cache {
            event: CacheEvent::Available { paths },
        } => format!("binary cache: {} more paths available to the nodes", paths.len()),
        DeployEvent::CachePushed { report } => format!(
            "binary cache: {} paths pushed ({} compressed) in {:.1} s; nodes substitute from it",
            report.uploaded,
            HumanBytes(report.file_bytes),
            report.elapsed.as_secs_f64()
        ),
        DeployEvent::CacheFailed { cache, error } => cache_failed_text(cache, error),
        DeployEvent::Copy { name, event: CopyEvent::Planned { closure_paths, present_paths, missing_paths, missing_bytes } } => format!(
            "{name}: {present_paths} of {closure_paths} paths present, copying {missing_paths} ({})",
            HumanBytes(*missing_bytes)
        ),
        DeployEvent::Copy { name, event } => {
            format!("{name}: {}", crate::progress::transport_line(event)?)
        }
    })
}

fn event_json(event: &DeployEvent) -> Option<Value> {
    Some(match event {
        DeployEvent::NodeStarted { name } => json!({"event": "nodeStarted", "node": name}),
        DeployEvent::Switched { name } => json!({"event": "switched", "node": name}),
        DeployEvent::WaitingForLock { name, holder } => {
            json!({"event": "waitingForLock", "node": name, "holder": holder})
        }
        DeployEvent::Confirmed { name } => json!({"event": "confirmed", "node": name}),
        DeployEvent::Stage {
            name,
            stage,
            message,
        } => json!({"event": "stage", "node": name, "stage": stage, "message": message}),
        DeployEvent::InstallingNix { name } => json!({"event": "installingNix", "node": name}),
        DeployEvent::Cache {
            event:
                CacheEvent::Checked {
                    paths,
                    missing,
                    missing_nar_bytes,
                },
        } => {
            json!({"event": "cacheChecked", "paths": paths, "missingPaths": missing, "missingBytes": missing_nar_bytes})
        }
        DeployEvent::Cache {
            event:
                CacheEvent::NarUploaded {
                    path,
                    nar_size,
                    file_size,
                },
        } => {
            json!({"event": "cacheUploaded", "path": path.to_absolute(), "narSize": nar_size, "fileSize": file_size})
        }
        DeployEvent::Cache {
            event: CacheEvent::Available { paths },
        } => json!({"event": "cacheAvailable", "paths": paths.len()}),
        DeployEvent::CachePushed { report } => json!({"event": "cachePushed",
            "paths": report.paths, "presentPaths": report.present, "uploadedPaths": report.uploaded,
            "narBytes": report.nar_bytes, "fileBytes": report.file_bytes,
            "seconds": report.elapsed.as_secs_f64()}),
        DeployEvent::CacheFailed { cache, error } => {
            json!({"event": "cacheFailed", "cache": cache, "error": error})
        }
        DeployEvent::Source { name, source } => match source {
            Source::Seed => {
                json!({"event": "source", "node": name, "from": "deployer", "seed": true})
            }
            Source::Node(from) => json!({"event": "source", "node": name, "from": from}),
            Source::Direct { reason } => {
                json!({"event": "source", "node": name, "from": "deployer", "reason": reason})
            }
        },
        DeployEvent::Copy {
            name,
            event:
                CopyEvent::Planned {
                    closure_paths,
                    present_paths,
                    missing_paths,
                    missing_bytes,
                },
        } => {
            json!({"event": "copyPlanned", "node": name, "closurePaths": closure_paths, "presentPaths": present_paths, "missingPaths": missing_paths, "missingBytes": missing_bytes})
        }
        DeployEvent::Copy {
            name,
            event: CopyEvent::PathsDone { paths },
        } => json!({"event": "pathsDone", "node": name, "paths": paths.len()}),
        DeployEvent::Copy { name, event } => crate::progress::transport_json(name, event)?,
    })
}

/// The per-node summary table (or JSON; with `-q` only the failures).
pub fn outcomes(outcomes: &[NodeOutcome], verbosity: Verbosity) {
    if verbosity == Verbosity::Json {
        let nodes: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                let (status, error, generation) = match &o.status {
                    NodeStatus::Done => ("ok", None, None),
                    NodeStatus::Failed(e) => ("failed", Some(e.to_string()), None),
                    NodeStatus::RolledBack { reason, generation } => {
                        ("rolledBack", Some(reason.to_string()), Some(*generation))
                    }
                };
                json!({"name": o.name, "status": status, "error": error, "rolledBackTo": generation, "sentPaths": o.sent_paths,
                    "sentBytes": o.sent_bytes, "seconds": o.elapsed.as_secs_f64()})
            })
            .collect();
        println!("{}", json!({"event": "summary", "nodes": nodes}));
        return;
    }
    if verbosity != Verbosity::Quiet {
        table(outcomes);
    }
    for o in outcomes {
        match &o.status {
            NodeStatus::Done => {}
            NodeStatus::Failed(e) => eprintln!("{}: {e}", o.name),
            NodeStatus::RolledBack { reason, generation } => {
                eprintln!(
                    "{}: rolled back to generation {generation}: {reason}",
                    o.name
                )
            }
        }
    }
}

fn table(outcomes: &[NodeOutcome]) {
    let width = outcomes
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    eprintln!(
        "{:width$}  {:11}  {:>6}  {:>10}  {:>7}",
        "NODE", "STATUS", "PATHS", "SENT", "TIME"
    );
    for o in outcomes {
        let status = match o.status {
            NodeStatus::Done => "ok",
            NodeStatus::Failed(_) => "FAILED",
            NodeStatus::RolledBack { .. } => "ROLLED BACK",
        };
        eprintln!(
            "{:width$}  {:11}  {:>6}  {:>10}  {:>6.1}s",
            o.name,
            status,
            o.sent_paths,
            HumanBytes(o.sent_bytes).to_string(),
            o.elapsed.as_secs_f64()
        );
    }
}
