//! `nix-deploy-receive`: see the library's documentation.
//!
//! ```text
//! nix-deploy-receive --version
//! nix-deploy-receive zstd [--stripes N --rendezvous NAME] -- PROGRAM [ARG...]
//! nix-deploy-receive join NAME K
//! ```

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};

use deploy_receive::stripes::{self, Rendezvous, StripedReader, STRIPES_MAX};
use deploy_receive::{pump, version_line, NAME};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!(
            "usage: {NAME} --version | {NAME} zstd [--stripes N --rendezvous NAME] -- PROGRAM [ARG...] | {NAME} join NAME K"
        );
        ExitCode::from(2)
    };
    let stripes = |n: &str| {
        n.parse::<usize>()
            .ok()
            .filter(|n| (1..=STRIPES_MAX).contains(n))
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--version"] => {
            println!("{}", version_line());
            ExitCode::SUCCESS
        }
        ["zstd", "--", program, ..] => receive(None, program, &args[3..]),
        ["zstd", "--stripes", n, "--rendezvous", name, "--", program, ..] => match stripes(n) {
            Some(n) => receive(Some((n, name)), program, &args[7..]),
            None => usage(),
        },
        ["join", name, k] => match stripes(k) {
            Some(k) => match stripes::join(name, k, std::io::stdin().lock()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{NAME}: joining stripe {k}: {e}");
                    ExitCode::from(1)
                }
            },
            None => usage(),
        },
        _ => usage(),
    }
}

/// Runs `program` with `args`, its stdin fed with the decompressed stream
/// (our stdin, or `striped`'s stripes with our stdin first), its stdout
/// and stderr ours; exits as it does.
fn receive(striped: Option<(usize, &str)>, program: &str, args: &[String]) -> ExitCode {
    // The rendezvous first, so the other stripes can join at once.
    let input: Box<dyn Read> = match striped {
        None | Some((1, _)) => Box::new(StripedReader::single(std::io::stdin().lock())),
        Some((n, name)) => {
            match Rendezvous::create(name).and_then(|r| r.reader(std::io::stdin().lock(), n)) {
                Ok(reader) => Box::new(reader),
                Err(e) => {
                    eprintln!("{NAME}: can't set up the rendezvous of {n} stripes: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    };
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
    let pumped = pump(input, sink);
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
