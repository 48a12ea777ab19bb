//! `nix-deploy-receive`: see the library's documentation.
//!
//! ```text
//! nix-deploy-receive --version
//! nix-deploy-receive zstd -- PROGRAM [ARG...]
//! ```

use std::process::{Command, ExitCode, Stdio};

use deploy_receive::{pump, version_line, NAME};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--version"] => {
            println!("{}", version_line());
            ExitCode::SUCCESS
        }
        ["zstd", "--", program, ..] => receive(program, &args[3..]),
        _ => {
            eprintln!("usage: {NAME} --version | {NAME} zstd -- PROGRAM [ARG...]");
            ExitCode::from(2)
        }
    }
}

/// Runs `program` with `args`, its stdin fed with our decompressed stdin,
/// its stdout and stderr ours; exits as it does.
fn receive(program: &str, args: &[String]) -> ExitCode {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{NAME}: can't start {program}: {e}");
            return ExitCode::from(127);
        }
    };
    let Some(sink) = child.stdin.take() else {
        eprintln!("{NAME}: {program} has no stdin pipe");
        return ExitCode::from(1);
    };
    let pumped = pump(std::io::stdin().lock(), sink);
    // The sink is closed here (moved into pump and dropped): the program
    // sees EOF and finishes its answer.
    let status = child.wait();
    match &pumped {
        Ok(p) if !p.clean_end => {
            eprintln!("{NAME}: the stream ended inside a zstd frame (the sender went away)")
        }
        Ok(_) => {}
        // The program closing its stdin first is its own business: it
        // reports why on stderr itself.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => eprintln!("{NAME}: {e}"),
    }
    match status {
        Ok(s) => match s.code() {
            Some(0) if pumped.is_err() => ExitCode::from(1),
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::from(1),
        },
        Err(e) => {
            eprintln!("{NAME}: waiting for {program}: {e}");
            ExitCode::from(1)
        }
    }
}
