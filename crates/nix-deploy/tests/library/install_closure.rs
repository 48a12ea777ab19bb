//! The `closure` install method on a node without any Nix (a Debian 13
//! chroot, no network beyond our SSH): the Nix package comes from the real
//! flake's inventory (`deploy.nodes.<node>.nix.package`, here the fixture
//! nixpkgs' self-contained copy of this machine's Nix 2.8), is streamed as
//! tar and registered; then the store verifies, a deploy to the node
//! succeeds, and preparing again changes nothing.

use std::time::Duration;

use deploy_ssh::{SshSession, Target};
use nix_deploy::deploy::{deploy_nodes, DeployOptions, Goal, NodePlan, NodeStatus};
use nix_deploy::install::{
    install, DaemonService, InstallError, InstallReport, Installed, NixInstall, BUILD_USERS,
    DAEMON_UNIT,
};
use nix_deploy::inventory::{build_nix_package, Inventory};
use nix_deploy::prepare::{prepare, PrepareError};
use nix_deploy::trust::TrustChange;
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, NodeKind};
use test_support::fixture_closure;
use tokio_util::sync::CancellationToken;

const PROFILE: &str = "/nix/var/nix/profiles/nix-deploy";

async fn session(cluster: &Cluster, target: &str) -> SshSession {
    SshSession::connect(&Target::parse(target).unwrap(), &cluster.ssh_options())
        .await
        .unwrap()
}

/// The inventory's Nix package for the control plane, built.
async fn nix_package() -> StorePath {
    let nix = crate::flake_support::repo_nix();
    let inventory = Inventory::load(&nix).await.unwrap();
    build_nix_package(&nix, &inventory.nodes["k8s-cluster-main"])
        .await
        .unwrap()
}

fn local_closure(path: &StorePath) -> std::collections::BTreeSet<String> {
    let out = std::process::Command::new("nix-store")
        .args(["-qR", &path.to_absolute()])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_nix_offline_then_deploys_and_a_second_prepare_changes_nothing() {
    let package = nix_package().await;
    let how = NixInstall::Closure {
        package: package.clone(),
    };
    let cluster = Cluster::start(&ClusterSpec::new().node("bare", NodeKind::Bare)).unwrap();
    let node = cluster.node("bare").unwrap();

    // A non-root user is told to use root, and nothing is touched.
    let err = prepare(
        &session(&cluster, "deploy@bare").await,
        None,
        Some(&how),
        &Default::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PrepareError::Install(InstallError::NotRoot { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("root"), "{err}");
    assert!(node.run_ok("test ! -e /nix/store").is_ok());

    let s = session(&cluster, "bare").await;
    let first = prepare(&s, None, Some(&how), &Default::default())
        .await
        .unwrap();
    let report = closure_report(first.installed.clone().expect("Nix was installed"));
    eprintln!(
        "install: {} paths, {} NAR bytes in {:?}",
        report.sent_paths, report.sent_bytes, report.elapsed
    );
    assert!(first.changed());
    assert_eq!(first.facts.nix_version.as_deref(), Some("2.8.0"));
    assert!(!first.facts.daemon_socket);
    let closure = local_closure(&package);
    assert_eq!(report.closure_paths, closure.len());
    assert_eq!(report.sent_paths, closure.len());
    assert_eq!(report.registered_paths, closure.len());
    assert_eq!(report.build_users_created, BUILD_USERS);
    assert_eq!(report.nix_conf, TrustChange::Changed);
    assert!(report.profile_created);
    for c in ["nix", "nix-store", "nix-env", "nix-daemon"] {
        assert!(report.linked_commands.iter().any(|l| l == c), "{c}");
    }
    assert_eq!(report.service, DaemonService::NoSystemd);

    // The store is valid, canonical and holds exactly the closure.
    node.verify_store().unwrap();
    assert_eq!(node.store_closure(&package.to_absolute()).unwrap(), closure);
    let odd = node
        .run_ok(&format!(
            "find {} \\( \\( ! -type l -perm /222 \\) -o -newermt @1 -o ! -newermt @0 \\) -print",
            package.to_absolute()
        ))
        .unwrap();
    assert_eq!(odd, "", "every file read-only with mtime 1");
    assert!(node
        .run_ok("readlink -f /nix/var/nix/profiles/default/bin/nix-store")
        .unwrap()
        .contains(&package.to_absolute()));
    let conf = node.run_ok("cat /etc/nix/nix.conf").unwrap();
    assert!(conf.contains("build-users-group = nixbld"), "{conf}");

    // A deploy to the node now works (copy over `nix-daemon --stdio`, switch).
    let fx = fixture_closure(30, "install-closure", 4);
    let plan = NodePlan {
        name: "bare".to_owned(),
        target: Target::parse("bare").unwrap(),
        profile_path: PROFILE.to_owned(),
        profile: StorePath::parse(&fx.root).unwrap(),
        peer_address: None,
        peer_port: None,
    };
    let opts = DeployOptions {
        goal: Goal::Switch,
        ssh: cluster.ssh_options(),
        ..DeployOptions::default()
    };
    let outcomes = deploy_nodes(vec![plan], &opts, None, &CancellationToken::new()).await;
    assert!(
        matches!(outcomes[0].status, NodeStatus::Done),
        "{outcomes:?}"
    );
    assert_eq!(
        node.run_ok(&format!("readlink -f {PROFILE}"))
            .unwrap()
            .trim(),
        fx.root
    );
    node.verify_store().unwrap();

    // Preparing again: Nix is found, nothing changes, nix.conf is the same.
    let again = prepare(&s, None, Some(&how), &Default::default())
        .await
        .unwrap();
    assert!(again.installed.is_none());
    assert!(!again.changed());
    assert_eq!(node.run_ok("cat /etc/nix/nix.conf").unwrap(), conf);
    // The installer itself, run again on the finished node, changes nothing.
    let rerun = closure_report(
        tokio::time::timeout(Duration::from_secs(60), install(&s, &how, None))
            .await
            .unwrap()
            .unwrap(),
    );
    assert!(!rerun.changed(), "{rerun:?}");
    assert_eq!(rerun.sent_paths, 0);
}

/// A stand-in `systemctl` for a node without systemd: logs its arguments
/// and runs the installed daemon for `start`/`restart`.
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
echo "$*" >> /run/systemctl.log
case "$1" in
  is-active) [ -S /nix/var/nix/daemon-socket/socket ] ;;
  start|restart)
    [ -e /run/nix-daemon.pid ] && kill "$(cat /run/nix-daemon.pid)" 2>/dev/null
    rm -f /nix/var/nix/daemon-socket/socket
    setsid /nix/var/nix/profiles/default/bin/nix-daemon --daemon </dev/null >/run/nix-daemon.log 2>&1 &
    echo $! > /run/nix-daemon.pid
    i=0; while [ ! -S /nix/var/nix/daemon-socket/socket ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done ;;
esac
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_daemon_unit_is_installed_and_started_once_over_leftovers() {
    let package = nix_package().await;
    let how = NixInstall::Closure {
        package: package.clone(),
    };
    let cluster = Cluster::start(&ClusterSpec::new().node("bare", NodeKind::Bare)).unwrap();
    let node = cluster.node("bare").unwrap();
    node.run_ok(&format!(
        "mkdir -p /run/systemd/system /usr/local/sbin && \
         printf '%s' '{FAKE_SYSTEMCTL}' > /usr/local/sbin/systemctl && \
         chmod +x /usr/local/sbin/systemctl && \
         mkdir -p /nix/.nix-deploy-unpack/left-over && chmod -R a-w /nix/.nix-deploy-unpack"
    ))
    .unwrap();
    // An interrupted install left the Nix package's path, corrupt, and no
    // database: it is replaced, not registered as it is.
    let leftover = package.to_absolute();
    node.run_ok(&format!(
        "mkdir -p {leftover}/bin && echo corrupt > {leftover}/bin/nix-store && chmod -R a-w {leftover}"
    ))
    .unwrap();

    let s = session(&cluster, "bare").await;
    let first = prepare(&s, None, Some(&how), &Default::default())
        .await
        .unwrap();
    let report = closure_report(first.installed.expect("installed"));
    assert_eq!(report.service, DaemonService::Installed);
    assert_eq!(
        report.sent_paths,
        local_closure(&package).len(),
        "the leftover too"
    );
    node.verify_store().unwrap();
    assert!(first.facts.daemon_socket, "the daemon listens");
    assert_eq!(
        node.run_ok("cat /etc/systemd/system/nix-daemon.service")
            .unwrap(),
        DAEMON_UNIT
    );
    assert_eq!(
        node.run_ok("cat /run/systemctl.log").unwrap(),
        "daemon-reload\nenable --quiet nix-daemon.service\nrestart nix-daemon.service\n"
    );
    assert!(node.run_ok("test ! -e /nix/.nix-deploy-unpack").is_ok());
    assert_the_daemon_serves(node, &package);

    // Again: nothing to do, the running daemon is left alone.
    let rerun = closure_report(install(&s, &how, None).await.unwrap());
    assert_eq!(rerun.service, DaemonService::Running);
    assert!(!rerun.changed(), "{rerun:?}");
    let log = node.run_ok("cat /run/systemctl.log").unwrap();
    assert!(
        log.ends_with("is-active --quiet nix-daemon.service\n"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_real_systemd_the_daemon_unit_runs_and_serves_the_store() {
    let package = nix_package().await;
    let how = NixInstall::Closure {
        package: package.clone(),
    };
    let cluster = Cluster::start(&ClusterSpec::new().systemd_node("bare", NodeKind::Bare)).unwrap();
    let node = cluster.node("bare").unwrap();
    let s = session(&cluster, "bare").await;
    let first = prepare(&s, None, Some(&how), &Default::default())
        .await
        .unwrap();
    let report = closure_report(first.installed.expect("installed"));
    assert_eq!(report.service, DaemonService::Installed);
    assert!(first.facts.daemon_socket, "the daemon listens");
    assert_eq!(
        node.run_ok(
            "systemctl is-enabled nix-daemon.service; systemctl is-active nix-daemon.service"
        )
        .unwrap(),
        "enabled\nactive\n"
    );
    assert_the_daemon_serves(node, &package);
    node.verify_store().unwrap();
    // Again: the running unit is left alone.
    let pid = node
        .run_ok("systemctl show -p MainPID --value nix-daemon.service")
        .unwrap();
    let rerun = closure_report(install(&s, &how, None).await.unwrap());
    assert_eq!(rerun.service, DaemonService::Running);
    assert_eq!(
        node.run_ok("systemctl show -p MainPID --value nix-daemon.service")
            .unwrap(),
        pid
    );
}

/// A query through the node's daemon sees `package`'s whole closure.
fn assert_the_daemon_serves(node: &test_cluster::Node, package: &StorePath) {
    let through_daemon = node
        .run_ok(&format!(
            "NIX_REMOTE=daemon nix-store -qR {}",
            package.to_absolute()
        ))
        .unwrap();
    assert_eq!(through_daemon.lines().count(), local_closure(package).len());
}

/// The closure method's report.
fn closure_report(installed: Installed) -> InstallReport {
    match installed {
        Installed::Closure(r) => r,
        other => panic!("not the closure method: {other:?}"),
    }
}
