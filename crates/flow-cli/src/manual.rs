//! `docker-flow completions SHELL` and `docker-flow man`: generated from the clap definitions
//! the parser uses ([`crate::args::Cli`]), so they list exactly the options that exist.

use std::io::Write;

use clap::CommandFactory;

use crate::args::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "docker-flow", out);
}

/// Writes the man page (roff, section 1) to `out`.
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Loads the bash completion into a real bash, finds the function it registered for
    /// `docker-flow`, and asks it to complete `--blue`.
    #[test]
    fn the_bash_completion_loads_and_completes_a_flag() {
        let mut script = Vec::new();
        completions(clap_complete::Shell::Bash, &mut script);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker-flow.bash");
        std::fs::write(&path, &script).unwrap();
        let probe = format!(
            "source {path}\n\
             COMP_WORDS=(docker-flow --blue); COMP_CWORD=1; COMP_LINE='docker-flow --blue'; COMP_POINT=${{#COMP_LINE}}\n\
             function=$(complete -p docker-flow | sed 's/.*-F \\([^ ]*\\).*/\\1/')\n\
             \"$function\" docker-flow --blue docker-flow\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            path = path.display()
        );
        let output = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &probe])
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "bash failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(stdout.trim(), "--blue-green", "completions: {stdout}");
    }

    #[test]
    fn the_man_page_lists_every_release_flag_and_renders() {
        let mut page = Vec::new();
        man(&mut page).unwrap();
        let text = String::from_utf8(page.clone()).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH docker-flow"),
            "{text}"
        );
        for arg in Cli::command().get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(
                    text.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                    "the man page lacks --{long}"
                );
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker-flow.1");
        std::fs::write(&path, &page).unwrap();
        let rendered = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(&path)
            .output()
            .expect("groff runs");
        assert!(rendered.status.success());
        assert!(
            rendered.stderr.is_empty(),
            "groff warns: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        assert!(String::from_utf8_lossy(&rendered.stdout).contains("blue"));
    }
}
