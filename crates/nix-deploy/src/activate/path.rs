//! The profile's `bin` on login shells' PATH: a file we own,
//! `/etc/profile.d/nix-deploy.sh` (read by `/etc/profile` on Debian),
//! rewritten only when its content changes, atomically (temp file and
//! rename). Services do not use it: their units name programs by absolute
//! paths under the profile. Only root can write it: for other SSH users
//! nothing is installed (their shells find the profile however they set
//! up their own PATH).

use deploy_ssh::SshSession;

use super::ActivationError;
use deploy_remote::{quote, run};

/// The managed file.
pub const PROFILE_D: &str = "/etc/profile.d/nix-deploy.sh";

/// The file's content for `profile`: adds `profile/bin` to PATH once.
pub fn script(profile: &str) -> String {
    let bin = quote(&format!("{profile}/bin"));
    format!(
        "# Managed by nix-deploy: the deployed profile's programs for login shells.\n\
         case \":$PATH:\" in\n  *:{bin}:*) ;;\n  *) PATH={bin}:\"$PATH\"; export PATH ;;\nesac\n"
    )
}

/// Installs or updates the file; returns whether it changed.
pub async fn install(session: &SshSession, profile: &str) -> Result<bool, ActivationError> {
    let content = quote(&script(profile));
    let file = quote(PROFILE_D);
    let tmp = quote(&format!("{PROFILE_D}.tmp"));
    let out = run(
        session,
        format!(
            "if [ \"$(id -u)\" != 0 ]; then echo skipped; \
             elif printf '%s' {content} | cmp -s - {file}; then echo same; else \
             mkdir -p /etc/profile.d && printf '%s' {content} > {tmp} && chmod 644 {tmp} && mv -f {tmp} {file} && echo changed; fi"
        ),
    )
    .await?;
    Ok(out == "changed")
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_is_idempotent_shell() {
        let s = super::script("/nix/var/nix/profiles/nix-deploy");
        assert!(s.contains("*:/nix/var/nix/profiles/nix-deploy/bin:*) ;;"));
        assert!(s.contains("PATH=/nix/var/nix/profiles/nix-deploy/bin:\"$PATH\""));
    }
}
