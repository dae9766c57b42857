//! Loading a configuration: `haproxy -c` on a candidate file, the rename over `haproxy.cfg`,
//! `reload` on the master socket and the wait for the new worker (see the
//! [parent module](super)).

use std::process::Stdio;

use tokio::process::Command;

use crate::table::write_atomically;

use super::*;

impl Inner {
    /// Renders `table`, validates it with `haproxy -c` and, only if valid, makes it the
    /// configuration file. Nothing is loaded.
    pub(super) async fn install_config(
        &self,
        table: &RouteTable,
        unrouted: Option<&ServiceName>,
    ) -> Result<(), HaproxyError> {
        self.check_config(table, unrouted).await?;
        let (candidate, config) = (self.files.candidate.clone(), self.files.config.clone());
        file_work("cannot install the configuration", move || {
            std::fs::rename(&candidate, &config).map_err(|source| HaproxyError::Io {
                what: format!("cannot install {}", config.display()),
                source,
            })
        })
        .await
    }

    /// Renders `table` into the candidate file and validates it with `haproxy -c`.
    pub(super) async fn check_config(
        &self,
        table: &RouteTable,
        unrouted: Option<&ServiceName>,
    ) -> Result<(), HaproxyError> {
        let text = render(table, &self.listeners(), &self.files.admin_socket, unrouted);
        write_atomically(&self.files.candidate, text.into_bytes())
            .await
            .map_err(|source| HaproxyError::Io {
                what: format!("cannot write {}", self.files.candidate.display()),
                source,
            })?;
        self.validate_file(&self.files.candidate)
            .await?
            .map_err(|message| HaproxyError::InvalidConfig { message })
    }

    /// Runs `haproxy -c` on `path`: `Ok(Err(HAProxy's output))` when HAProxy rejects it.
    pub(super) async fn validate_file(
        &self,
        path: &Path,
    ) -> Result<Result<(), String>, HaproxyError> {
        let output = Command::new(&self.options.binary)
            .arg("-c")
            .arg("-f")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| HaproxyError::Io {
                what: format!("cannot run {} -c", self.options.binary.display()),
                source,
            })?;
        if output.status.success() {
            return Ok(Ok(()));
        }
        let mut message = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            if !message.is_empty() {
                message.push('\n');
            }
            message.push_str(stderr.trim());
        }
        Ok(Err(message))
    }

    /// Checks that HAProxy compiles each regular expression of `entry` — `path_reg` paths and
    /// `reqPathSearchReplace` searches — alone in a throw-away configuration: a pattern its
    /// regex engine (PCRE) rejects is bad input, answered 400 with PCRE's reason, not a
    /// configuration HAProxy refuses (500). The allow-list of [`crate::validate`] has already
    /// made sure no pattern can inject configuration.
    pub(super) async fn check_patterns(&self, entry: &RouteEntry) -> Result<(), HaproxyError> {
        for destination in &entry.destinations {
            if destination.path_type == flow_core::PathType::Regex {
                for path in destination.paths.iter().chain(&destination.excluded_paths) {
                    let rule = format!("http-request deny if {{ path_reg -- {path} }}");
                    if let Some(reason) = self.check_pattern(&rule).await? {
                        return Err(InvalidInput::Regex {
                            path: path.clone(),
                            reason,
                        }
                        .into());
                    }
                }
            }
            for rewrite in &destination.path_rewrites {
                let rule = format!(
                    "http-request set-path %[path,regsub({},{})]",
                    rewrite.search, rewrite.replace
                );
                if let Some(reason) = self.check_pattern(&rule).await? {
                    return Err(InvalidInput::Parameter {
                        parameter: "reqPathSearchReplace".into(),
                        reason: format!(
                            "{:?} is not a regular expression HAProxy compiles ({reason})",
                            rewrite.search
                        ),
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Validates `rule` alone in a frontend: `Some(HAProxy's reason)` when it is rejected.
    pub(super) async fn check_pattern(&self, rule: &str) -> Result<Option<String>, HaproxyError> {
        let text = format!(
            "defaults\n    mode http\nfrontend pattern_check\n    bind 127.0.0.1:1\n    {rule}\n"
        );
        write_atomically(&self.files.regex_check, text.into_bytes())
            .await
            .map_err(|source| HaproxyError::Io {
                what: format!("cannot write {}", self.files.regex_check.display()),
                source,
            })?;
        let Err(message) = self.validate_file(&self.files.regex_check).await? else {
            return Ok(None);
        };
        // HAProxy's line reads `… : regex '…' is invalid (error=…)` or similar.
        let reason = message
            .lines()
            .find(|line| line.contains("regex"))
            .or_else(|| message.lines().find(|line| line.contains("ALERT")))
            .and_then(|line| line.rsplit(" : ").next())
            .unwrap_or(&message)
            .trim()
            .to_string();
        Ok(Some(reason))
    }

    /// Installs the configuration of `table` (without the `use_backend` rule of `unrouted`)
    /// and reloads HAProxy with it.
    pub(super) async fn reload_with(
        &self,
        state: &mut State,
        table: &RouteTable,
        unrouted: Option<&ServiceName>,
    ) -> Result<(), HaproxyError> {
        self.install_config(table, unrouted).await?;
        let before = self.show_proc().await?;
        // The master re-executes itself on `reload` and closes the connection without a reply
        // in 2.6; the outcome is read from `show proc`.
        let _ = self.master_command("reload").await;
        match self
            .wait_for_new_worker(Some(state.worker_pid), before.failed)
            .await
        {
            Ok(pid) => {
                state.worker_pid = pid;
                self.publish(state);
                Ok(())
            }
            Err(error) => {
                // Put the configuration of what is still running back in place, so the next
                // reload starts from it.
                let _ = self.install_config(&state.table, None).await;
                Err(error)
            }
        }
    }

    /// Polls `show proc` until a worker other than `old` runs; fails when the master counts
    /// a failed reload beyond `failed_before` or exits.
    pub(super) async fn wait_for_new_worker(
        &self,
        old: Option<u32>,
        failed_before: u32,
    ) -> Result<u32, HaproxyError> {
        let deadline = Instant::now() + WORKER_START_TIMEOUT;
        let starting = old.is_none();
        let fail = |message: String| {
            if starting {
                HaproxyError::Start { message }
            } else {
                HaproxyError::Reload { message }
            }
        };
        loop {
            if let Some(status) = self.master_exit_status() {
                return Err(fail(format!(
                    "the HAProxy master exited ({status}); {}",
                    self.log_tail().await
                )));
            }
            if let Ok(proc) = self.show_proc().await {
                if proc.failed > failed_before {
                    return Err(fail(format!(
                        "the new worker failed to load; the previous one keeps serving; {}",
                        self.log_tail().await
                    )));
                }
                if let Some(pid) = proc.workers.first().copied().filter(|p| Some(*p) != old) {
                    return Ok(pid);
                }
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "no new worker after {WORKER_START_TIMEOUT:?}; {}",
                    self.log_tail().await
                )));
            }
            sleep(POLL_INTERVAL).await;
        }
    }
}
