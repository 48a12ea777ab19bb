//! A profile's generations, read the way Nix names them: the profile `P`
//! is a symlink to `NAME-N-link` (relative, in `P`'s directory, `NAME`
//! being `P`'s file name), and each `NAME-N-link` points to a store path
//! and is a GC root. Rolling back is `nix-env --switch-generation`, which
//! replaces `P` in one rename, as `--set` does.

use deploy_ssh::SshSession;

use super::ActivationError;
use deploy_remote::{node_name, quote, run};

/// One generation of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Its number, as `nix-env --list-generations` shows it.
    pub number: u64,
    /// When it was made (the link's mtime, seconds since the epoch).
    pub created: u64,
    /// The store path it points to.
    pub path: String,
    /// Whether the profile points to it now.
    pub current: bool,
}

/// The directory and file name of a profile path.
fn split(profile: &str) -> (&str, &str) {
    match profile.rsplit_once('/') {
        Some(("", base)) => ("/", base),
        Some((dir, base)) => (dir, base),
        None => (".", profile),
    }
}

/// The generation number in a link name `NAME-N-link`, if it is one.
pub fn link_number(base: &str, link: &str) -> Option<u64> {
    let middle = link
        .strip_prefix(base)?
        .strip_prefix('-')?
        .strip_suffix("-link")?;
    if middle.is_empty() || !middle.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    middle.parse().ok()
}

/// The profile's generations, oldest first (empty when it has none).
pub async fn list(session: &SshSession, profile: &str) -> Result<Vec<Generation>, ActivationError> {
    let (dir, base) = split(profile);
    let command = format!(
        "cd {dir} 2>/dev/null || exit 0; printf 'current\\t%s\\n' \"$(readlink {base} 2>/dev/null)\"; \
         for l in {base}-*-link; do if [ -L \"$l\" ]; then \
         printf 'gen\\t%s\\t%s\\t%s\\n' \"$l\" \"$(stat -c %Y \"$l\")\" \"$(readlink \"$l\")\"; fi; done",
        dir = quote(dir),
        base = quote(base),
    );
    let out = run(session, command).await?;
    parse(&out, base).ok_or_else(|| ActivationError::Unexpected {
        node: node_name(session),
        what: format!("listing the generations of {profile}"),
        output: out.clone(),
    })
}

/// Parses `list`'s output; `None` if it is malformed.
fn parse(out: &str, base: &str) -> Option<Vec<Generation>> {
    let mut current = None;
    let mut gens = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            // The output is trimmed: no link leaves `current` alone.
            ["current"] => {}
            ["current", link] => current = link_number(base, link),
            ["gen", link, mtime, path] => {
                let Some(number) = link_number(base, link) else {
                    continue;
                };
                gens.push(Generation {
                    number,
                    created: mtime.parse().ok()?,
                    path: (*path).to_owned(),
                    current: false,
                });
            }
            _ => return None,
        }
    }
    gens.sort_by_key(|g| g.number);
    for g in &mut gens {
        g.current = Some(g.number) == current;
    }
    Some(gens)
}

/// The shell command making generation `number` current.
pub(crate) fn switch_command(nix_env: &str, profile: &str, number: u64) -> String {
    format!(
        "{} --profile {} --switch-generation {number}",
        quote(nix_env),
        quote(profile)
    )
}

/// Makes generation `to` current, or the one before the current one when
/// `to` is `None`; returns the generation now current.
pub async fn rollback(
    session: &SshSession,
    profile: &str,
    to: Option<u64>,
) -> Result<Generation, ActivationError> {
    let gens = list(session, profile).await?;
    let current = gens.iter().find(|g| g.current).map(|g| g.number);
    let target = match to {
        Some(n) => gens.iter().find(|g| g.number == n).ok_or_else(|| {
            ActivationError::NoSuchGeneration {
                node: node_name(session),
                profile: profile.to_owned(),
                wanted: n,
                existing: gens.iter().map(|g| g.number).collect(),
            }
        })?,
        None => gens
            .iter()
            .rev()
            .find(|g| current.is_some_and(|c| g.number < c))
            .ok_or_else(|| ActivationError::NoPreviousGeneration {
                node: node_name(session),
                profile: profile.to_owned(),
                current,
            })?,
    };
    run(session, switch_command("nix-env", profile, target.number)).await?;
    Ok(Generation {
        current: true,
        ..target.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_as_nix_makes_them() {
        assert_eq!(link_number("nix-deploy", "nix-deploy-12-link"), Some(12));
        assert_eq!(link_number("nix-deploy", "nix-deploy-x-12-link"), None);
        assert_eq!(link_number("nix", "nix-deploy-1-link"), None);
        assert_eq!(link_number("nix-deploy", "nix-deploy--link"), None);
        assert_eq!(link_number("p", "p-1-link.tmp"), None);
    }

    #[test]
    fn parses_the_listing() {
        let out = "current\tp-2-link\ngen\tp-1-link\t100\t/nix/store/a\ngen\tp-2-link\t200\t/nix/store/b\ngen\tp-other-3-link\t1\t/x";
        let gens = parse(out, "p").unwrap();
        assert_eq!(gens.len(), 2);
        assert!(!gens[0].current && gens[1].current);
        assert_eq!(gens[1].path, "/nix/store/b");
        assert_eq!(split("/nix/var/p"), ("/nix/var", "p"));
        assert_eq!(split("/p"), ("/", "p"));
    }
}
