//! The client of HAProxy's Runtime API: commands through the master socket to the current
//! worker (`@!<pid> …`), and the parsing of `show proc` and `show stat` (see the
//! [parent module](super)).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::*;

/// How long one runtime command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

impl Inner {
    /// The server lines of every old worker. One that exits between `show proc` and its
    /// `show stat` holds no session any more, so it is left out rather than failing.
    pub(super) async fn old_worker_stats(&self) -> Result<Vec<RuntimeServer>, HaproxyError> {
        let mut stats = Vec::new();
        for pid in self.show_proc().await?.old_workers {
            if let Ok(servers) = self.show_stat(pid).await {
                stats.extend(servers);
            }
        }
        Ok(stats)
    }

    pub(super) async fn show_proc(&self) -> Result<ProcInfo, HaproxyError> {
        let reply = self.master_command("show proc").await?;
        Ok(parse_show_proc(&reply))
    }

    /// Sends a command whose success is an empty reply.
    pub(super) async fn expect_silent(&self, pid: u32, command: &str) -> Result<(), HaproxyError> {
        let reply = self.command(pid, command).await?;
        if reply.trim().is_empty() {
            Ok(())
        } else {
            Err(HaproxyError::Runtime {
                command: command.to_string(),
                reply: reply.trim().to_string(),
            })
        }
    }

    pub(super) async fn show_stat(&self, pid: u32) -> Result<Vec<RuntimeServer>, HaproxyError> {
        let reply = self.command(pid, "show stat").await?;
        parse_show_stat(&reply).ok_or_else(|| HaproxyError::Runtime {
            command: "show stat".into(),
            reply: reply.lines().next().unwrap_or_default().to_string(),
        })
    }

    /// Sends a runtime command to the worker `pid` through the master socket.
    pub(super) async fn command(&self, pid: u32, command: &str) -> Result<String, HaproxyError> {
        self.master_command(&format!("@!{pid} {command}")).await
    }

    pub(super) async fn master_command(&self, command: &str) -> Result<String, HaproxyError> {
        let socket = &self.files.master_socket;
        let exchange = async {
            let mut stream = UnixStream::connect(socket).await?;
            stream.write_all(format!("{command}\n").as_bytes()).await?;
            // The master CLI answers and closes only once our side is closed.
            stream.shutdown().await?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await?;
            Ok::<String, io::Error>(reply)
        };
        match timeout(COMMAND_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(source)) => Err(HaproxyError::Io {
                what: format!("`{command}` on {}", socket.display()),
                source,
            }),
            Err(_) => Err(HaproxyError::Io {
                what: format!("`{command}` on {}", socket.display()),
                source: io::Error::new(io::ErrorKind::TimedOut, "no reply within 5 s"),
            }),
        }
    }
}

/// The processes `show proc` lists.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ProcInfo {
    /// The master's pid.
    pub(super) master: Option<u32>,
    /// Current workers, newest first.
    pub(super) workers: Vec<u32>,
    /// Workers left by earlier reloads, still finishing their connections.
    pub(super) old_workers: Vec<u32>,
    /// The master's count of failed reloads.
    pub(super) failed: u32,
}

pub(super) fn parse_show_proc(reply: &str) -> ProcInfo {
    let mut info = ProcInfo::default();
    // The section a line is in: `# workers` or `# old workers`.
    let mut section = "";
    for line in reply.lines() {
        if line.starts_with('#') {
            section = line.trim();
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(pid), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        if kind == "master" {
            info.master = pid.parse().ok();
            if let Some(rest) = line.split("failed:").nth(1) {
                let digits: String = rest
                    .trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                info.failed = digits.parse().unwrap_or(0);
            }
        } else if kind == "worker" {
            let list = match section {
                "# workers" => &mut info.workers,
                "# old workers" => &mut info.old_workers,
                _ => continue,
            };
            if let Ok(pid) = pid.parse() {
                list.push(pid);
            }
        }
    }
    info
}

/// One server line of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RuntimeServer {
    pub(super) backend: String,
    pub(super) name: String,
    pub(super) address: SocketAddr,
    pub(super) sessions: u64,
    pub(super) state: ServerState,
    pub(super) raw_status: String,
    pub(super) check_status: String,
    pub(super) requests: u64,
    pub(super) responses_5xx: u64,
}

impl RuntimeServer {
    /// Health-checked and found reachable, or unchecked (then it counts as UP once present).
    pub(super) fn passed_check(&self, skip_check: bool) -> bool {
        let running = matches!(self.state, ServerState::Up | ServerState::Drain)
            || self.raw_status == "no check";
        if skip_check {
            running
        } else {
            running && matches!(self.check_status.as_str(), "L4OK" | "L6OK" | "L7OK")
        }
    }
}

/// Parses the CSV of `show stat` into its server lines (None: not a `show stat` reply).
pub(super) fn parse_show_stat(reply: &str) -> Option<Vec<RuntimeServer>> {
    let mut lines = reply.lines();
    let header = lines.next()?.strip_prefix("# ")?;
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| columns.iter().position(|c| *c == name);
    let (px, sv, scur, status, check, addr) = (
        column("pxname")?,
        column("svname")?,
        column("scur")?,
        column("status")?,
        column("check_status")?,
        column("addr")?,
    );
    // Counters only the metrics read: a reply without them still lists the servers.
    let (requests, responses_5xx) = (column("req_tot"), column("hrsp_5xx"));
    let mut servers = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or_default();
        let counter = |i: Option<usize>| i.and_then(|i| field(i).parse().ok()).unwrap_or(0);
        let name = field(sv);
        if name.is_empty() || name == "FRONTEND" || name == "BACKEND" {
            continue;
        }
        let Ok(address) = field(addr).parse() else {
            continue;
        };
        let raw_status = field(status).to_string();
        let state = if raw_status.starts_with("MAINT") {
            ServerState::Maint
        } else if raw_status.starts_with("DRAIN") {
            ServerState::Drain
        } else if raw_status.starts_with("UP") || raw_status == "no check" {
            ServerState::Up
        } else {
            ServerState::Down
        };
        servers.push(RuntimeServer {
            backend: field(px).to_string(),
            name: name.to_string(),
            address,
            sessions: field(scur).parse().unwrap_or(0),
            state,
            raw_status,
            check_status: field(check).to_string(),
            requests: counter(requests),
            responses_5xx: counter(responses_5xx),
        });
    }
    Some(servers)
}

/// Adds the sessions `old` workers still hold to the current worker's servers (`current`);
/// a server with sessions that only an old worker knows is added, draining: it takes no new
/// connection. Request counters stay the current worker's.
pub(super) fn add_sessions_of_old_workers(
    current: &mut Vec<RuntimeServer>,
    old: Vec<RuntimeServer>,
) {
    for server in old.into_iter().filter(|s| s.sessions > 0) {
        match current
            .iter_mut()
            .find(|s| s.backend == server.backend && s.address == server.address)
        {
            Some(known) => known.sessions += server.sessions,
            None => current.push(RuntimeServer {
                state: ServerState::Drain,
                requests: 0,
                responses_5xx: 0,
                ..server
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_proc_lists_current_workers_and_failed_reloads() {
        let reply = "#<PID>          <type>          <reloads>       <uptime>        <version>\n\
            7885            master          1 [failed: 2]   0d00h10m29s     2.6.12\n\
            # workers\n\
            4572            worker          0               0d00h00m01s     2.6.12\n\
            # old workers\n\
            4000            worker          1               0d00h00m01s     2.6.12\n\
            # programs\n";
        assert_eq!(
            parse_show_proc(reply),
            ProcInfo {
                master: Some(7885),
                workers: vec![4572],
                old_workers: vec![4000],
                failed: 2
            }
        );
    }

    #[test]
    fn show_stat_lines_become_servers_with_their_state() {
        let reply = "# pxname,svname,scur,status,check_status,addr,\n\
            http_0,FRONTEND,3,OPEN,,,\n\
            be_web,s4_127_0_0_1_1,2,UP,L4OK,127.0.0.1:1,\n\
            be_web,s4_127_0_0_1_2,1,DRAIN,L4OK,127.0.0.1:2,\n\
            be_web,s4_127_0_0_1_3,0,MAINT,,127.0.0.1:3,\n\
            be_web,s4_127_0_0_1_4,0,DOWN,L4CON,127.0.0.1:4,\n\
            be_web,s4_127_0_0_1_5,0,no check,,127.0.0.1:5,\n\
            be_web,BACKEND,3,UP,,,\n";
        let servers = parse_show_stat(reply).unwrap();
        let states: Vec<(ServerState, u64)> =
            servers.iter().map(|s| (s.state, s.sessions)).collect();
        assert_eq!(
            states,
            [
                (ServerState::Up, 2),
                (ServerState::Drain, 1),
                (ServerState::Maint, 0),
                (ServerState::Down, 0),
                (ServerState::Up, 0)
            ]
        );
        assert!(servers[0].passed_check(false));
        assert!(servers[1].passed_check(false), "checked OK while draining");
        assert!(!servers[3].passed_check(false));
        assert!(
            !servers[4].passed_check(false),
            "unchecked is not checked OK"
        );
        assert!(servers[4].passed_check(true));
        assert!(parse_show_stat("Unknown command.").is_none());
    }

    #[test]
    fn sessions_old_workers_hold_are_added_and_servers_only_they_know_drain() {
        let current = "# pxname,svname,scur,status,check_status,addr,req_tot,\n\
            be_web,s4_127_0_0_1_1,1,UP,L4OK,127.0.0.1:1,7,\n";
        let old = "# pxname,svname,scur,status,check_status,addr,req_tot,\n\
            be_web,s4_127_0_0_1_1,2,UP,L4OK,127.0.0.1:1,40,\n\
            be_web,s4_127_0_0_1_2,3,UP,L4OK,127.0.0.1:2,50,\n\
            be_web,s4_127_0_0_1_3,0,UP,L4OK,127.0.0.1:3,60,\n";
        let mut servers = parse_show_stat(current).unwrap();
        add_sessions_of_old_workers(&mut servers, parse_show_stat(old).unwrap());
        let seen: Vec<(u16, ServerState, u64, u64)> = servers
            .iter()
            .map(|s| (s.address.port(), s.state, s.sessions, s.requests))
            .collect();
        assert_eq!(
            seen,
            [(1, ServerState::Up, 3, 7), (2, ServerState::Drain, 3, 0)],
            "sessions summed, requests the current worker's, idle old-only servers left out"
        );
    }
}
