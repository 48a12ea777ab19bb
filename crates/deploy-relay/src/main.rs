//! `nix-deploy-relay`: see the crate's library docs.

use std::process::ExitCode;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => deploy_relay::serve(tokio::io::stdin(), tokio::io::stdout()).await,
        [v] if v == "--version" => {
            println!("{}", nix_deploy::fanout::protocol::version_line());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: nix-deploy-relay [--version]\n\
                 (run by the deployer over SSH; it speaks JSON lines on stdin and stdout)"
            );
            ExitCode::from(2)
        }
    }
}
