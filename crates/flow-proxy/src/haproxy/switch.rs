//! The switch algorithm: a route's new servers are added, health-checked while they take no
//! traffic, put in rotation once UP, and only then the old ones drain and are deleted (see
//! the [parent module](super)).

use std::sync::Weak;

use super::runtime::RuntimeServer;
use crate::render::{Backend, CHECK};
use crate::table::Mode;
use crate::validate::check_entry;

use super::*;

impl Haproxy {
    /// Routes `route.service` to exactly `servers`, returning once they are all UP (see the
    /// [module docs](super) for how). Once HAProxy runs the change it is not reported as a
    /// failure: files that could not be written then are listed in [`Applied::warnings`].
    pub async fn reconfigure(
        &self,
        route: Route,
        servers: Vec<SocketAddr>,
        skip_check: bool,
    ) -> Result<Applied, HaproxyError> {
        self.reconfigure_entry(RouteEntry::new(route, servers, skip_check))
            .await
    }

    /// Like [`Haproxy::reconfigure`], for a route with any destinations and options. What
    /// depends on the other routes is checked here, under the lock: a `srcPort` of a TCP
    /// destination must be free, one of HTTP must be an HTTP bind's port, and only one
    /// service can be the default backend.
    pub async fn reconfigure_entry(&self, wanted: RouteEntry) -> Result<Applied, HaproxyError> {
        self.apply_entry(wanted, false).await
    }

    /// Like [`Haproxy::reconfigure_entry`] for what a release states, kept on top of the
    /// service's current route ([`RouteEntry::keeping_settings_of`]); the same as
    /// [`Haproxy::reconfigure_entry`] when the service has no route yet. The current route is
    /// read under the lock, so a change in between is never lost.
    pub async fn reconfigure_keeping(&self, stated: RouteEntry) -> Result<Applied, HaproxyError> {
        self.apply_entry(stated, true).await
    }

    pub(super) async fn apply_entry(
        &self,
        wanted: RouteEntry,
        keep: bool,
    ) -> Result<Applied, HaproxyError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let wanted = match state.table.get(&wanted.route.service) {
            Some(current) if keep => wanted.keeping_settings_of(current),
            _ => wanted,
        };
        check_entry(&wanted)?;
        if wanted.servers.is_empty() {
            return Err(InvalidInput::NoServers.into());
        }
        check_against_others(
            &wanted,
            &state.table,
            &inner.options.binds,
            &inner.options.https_binds,
        )?;
        // Under the lock: the check file is shared.
        inner.check_patterns(&wanted).await?;
        let service = wanted.route.service.clone();
        let skip_check = wanted.skip_check;
        let mut table = state.table.clone();
        table.insert(wanted.clone());
        // Set when only servers moved: the configuration file then still lists the old ones.
        let mut rewrite_config = false;
        match state.table.get(&service).cloned() {
            None => {
                // First the backend alone, so that servers that never come UP are never
                // routed to (a new route can overlap the paths of others), then the route.
                // The final configuration is checked before anything is loaded.
                inner.check_config(&table, None).await?;
                inner
                    .reload_with(&mut state, &table, Some(&service))
                    .await?;
                if let Err(error) = inner.wait_ready(&state, &wanted).await {
                    let previous = state.table.clone();
                    inner.reload_with(&mut state, &previous, None).await?;
                    return Err(error);
                }
                inner.reload_with(&mut state, &table, None).await?;
            }
            Some(current) => {
                let same_route = same_routing(&current, &wanted);
                if same_route {
                    self.move_servers(&mut state, &wanted).await?;
                    // The file lists the servers; with the same ones (a colour-only or repeated
                    // reconfigure) it is already what HAProxy runs.
                    rewrite_config = current.servers != wanted.servers;
                } else {
                    // The backend exists: move its servers without a reload first (which keeps
                    // the old ones if the new ones fail), then load the new routing.
                    if current.skip_check == skip_check {
                        // Servers are only moved once HAProxy accepts the new routing.
                        inner.check_config(&table, None).await?;
                        self.move_servers(&mut state, &wanted).await?;
                    }
                    inner.reload_with(&mut state, &table, None).await?;
                    // Backends of new destinations got their servers from the reload, like
                    // every backend when the check mode changed: they are waited for, and a
                    // failure loads the previous routing again.
                    let serving = backends(&current);
                    let added_backend = backends(&wanted)
                        .iter()
                        .any(|b| !serving.iter().any(|s| s.name == b.name));
                    if current.skip_check != skip_check || added_backend {
                        if let Err(error) = inner.wait_ready(&state, &wanted).await {
                            let previous = state.table.clone();
                            inner.reload_with(&mut state, &previous, None).await?;
                            return Err(error);
                        }
                    }
                }
            }
        }
        // HAProxy runs the change from here on: memory follows it first, the files after.
        state.table = table;
        inner.publish(&state);
        let mut applied = Applied::default();
        if rewrite_config {
            if let Err(error) = inner.install_config(&state.table, None).await {
                applied.warnings.push(format!(
                    "HAProxy runs the new servers of {service}, but {} could not be rewritten to list them ({error}); this changes nothing while the proxy runs, since every reload and every start render the configuration from the route table",
                    inner.files.config.display()
                ));
            }
        }
        inner.save_applied(&state.table, &mut applied).await;
        Ok(applied)
    }

    /// Adds the wanted servers missing from each backend the worker already has, waits until
    /// all wanted servers pass their check, puts them in rotation, then drains the others. A
    /// backend the worker does not have yet (a new destination) gets its servers from the
    /// reload that follows.
    pub(super) async fn move_servers(
        &self,
        state: &mut State,
        wanted: &RouteEntry,
    ) -> Result<(), HaproxyError> {
        let inner = &self.inner;
        let service = &wanted.route.service;
        let pid = state.worker_pid;
        let stats = inner.show_stat(pid).await?;
        let serving: Vec<Backend> = state.table.get(service).map(backends).unwrap_or_default();
        // Only backends the worker runs: servers cannot be added to one it does not know.
        let moving: Vec<Backend> = backends(wanted)
            .into_iter()
            .filter(|b| serving.iter().any(|s| s.name == b.name))
            .collect();
        let mut added = Vec::new();
        for backend in &moving {
            let present: Vec<&RuntimeServer> =
                stats.iter().filter(|s| s.backend == backend.name).collect();
            let served = serving
                .iter()
                .find(|s| s.name == backend.name)
                .map(|s| s.servers.as_slice())
                .unwrap_or_default();
            for address in &backend.servers {
                let name = server_name(*address);
                let target = format!("{}/{name}", backend.name);
                let result = match present.iter().find(|s| s.name == name) {
                    // One of the route's servers already: its admin state is left as it is
                    // (a server DOWN by its check is waited for like a new one, and stays
                    // ready).
                    Some(_) if served.contains(address) => Ok(()),
                    // Left over from an earlier switch (draining or in maintenance): checked
                    // again while it waits in drain like a new one. It stays in the draining
                    // set until the switch succeeds, so a failed switch lets its drain task
                    // finish.
                    Some(_) => inner.set_state(pid, &target, "drain").await,
                    None => {
                        added.push(target.clone());
                        inner
                            .add_server(pid, &target, *address, wanted.skip_check)
                            .await
                    }
                };
                if let Err(error) = result {
                    inner.delete_servers(pid, &added).await;
                    return Err(error);
                }
            }
        }
        if let Err(error) = inner.wait_ready_in(state, wanted, &moving).await {
            inner.delete_servers(pid, &added).await;
            return Err(error);
        }
        for backend in &moving {
            for address in &backend.servers {
                state
                    .draining
                    .remove(&(service.clone(), backend.name.clone(), *address));
                let target = format!("{}/{}", backend.name, server_name(*address));
                inner.set_state(pid, &target, "ready").await?;
            }
            for old in stats
                .iter()
                .filter(|s| s.backend == backend.name && !backend.servers.contains(&s.address))
            {
                let target = format!("{}/{}", backend.name, old.name);
                inner.set_state(pid, &target, "drain").await?;
                let key = (service.clone(), backend.name.clone(), old.address);
                if state.draining.insert(key.clone()) {
                    tokio::spawn(drain_then_delete(Arc::downgrade(&self.inner), key));
                }
            }
        }
        Ok(())
    }
}

impl Inner {
    /// Waits until every server of every backend of `wanted` passed its health check
    /// (checked servers) or is known to the worker (unchecked ones); fails with `NotUp`
    /// naming the others.
    pub(super) async fn wait_ready(
        &self,
        state: &State,
        wanted: &RouteEntry,
    ) -> Result<(), HaproxyError> {
        self.wait_ready_in(state, wanted, &backends(wanted)).await
    }

    /// [`Inner::wait_ready`] for some of the backends of `wanted`.
    pub(super) async fn wait_ready_in(
        &self,
        state: &State,
        wanted: &RouteEntry,
        backends: &[Backend],
    ) -> Result<(), HaproxyError> {
        let waited = self.options.up_timeout;
        let deadline = Instant::now() + waited;
        loop {
            let stats = self.show_stat(state.worker_pid).await?;
            let mut not_up: Vec<SocketAddr> = Vec::new();
            for backend in backends {
                for address in &backend.servers {
                    let up = stats.iter().any(|s| {
                        s.backend == backend.name
                            && s.address == *address
                            && s.passed_check(wanted.skip_check)
                    });
                    if !up && !not_up.contains(address) {
                        not_up.push(*address);
                    }
                }
            }
            if not_up.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HaproxyError::NotUp {
                    service: wanted.route.service.clone(),
                    servers: not_up,
                    waited,
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    pub(super) async fn add_server(
        &self,
        pid: u32,
        target: &str,
        address: SocketAddr,
        skip_check: bool,
    ) -> Result<(), HaproxyError> {
        let command = if skip_check {
            format!("add server {target} {address}")
        } else {
            format!("add server {target} {address} {CHECK}")
        };
        let reply = self.command(pid, &command).await?;
        if !reply.contains("New server registered.") {
            return Err(HaproxyError::Runtime { command, reply });
        }
        if !skip_check {
            self.expect_silent(pid, &format!("enable health {target}"))
                .await?;
        }
        self.set_state(pid, target, "drain").await
    }

    pub(super) async fn set_state(
        &self,
        pid: u32,
        target: &str,
        state: &str,
    ) -> Result<(), HaproxyError> {
        self.expect_silent(pid, &format!("set server {target} state {state}"))
            .await
    }

    /// Best effort: takes servers this call added out again (maint, then delete).
    pub(super) async fn delete_servers(&self, pid: u32, targets: &[String]) {
        for target in targets {
            let _ = self.set_state(pid, target, "maint").await;
            let _ = self.command(pid, &format!("del server {target}")).await;
        }
    }
}

/// What `wanted` asks for that depends on the other routes of `table`: a TCP destination's
/// `srcPort` must be taken by no other service and by no HTTP or HTTPS bind; an HTTP
/// destination's must be the port of an HTTP bind, and its `srcHttpsPort` one of an HTTPS
/// bind; only one service is the default backend.
pub(super) fn check_against_others(
    wanted: &RouteEntry,
    table: &RouteTable,
    binds: &[SocketAddr],
    https_binds: &[SocketAddr],
) -> Result<(), InvalidInput> {
    let service = &wanted.route.service;
    let others: Vec<&RouteEntry> = table
        .entries()
        .filter(|e| e.route.service != *service)
        .collect();
    let http_ports: Vec<u16> = binds.iter().map(SocketAddr::port).collect();
    let mut tcp_ports = BTreeSet::new();
    for destination in &wanted.destinations {
        if let Some(port) = destination.src_https_port {
            if !https_binds.iter().any(|bind| bind.port() == port) {
                return Err(InvalidInput::Conflict(format!(
                    "srcHttpsPort {port} is not a port the proxy serves HTTPS on ({}): give one of them",
                    if https_binds.is_empty() {
                        "none: start it with --bind-https ADDR".to_string()
                    } else {
                        list_addresses(https_binds)
                    }
                )));
            }
        }
        let Some(port) = destination.src_port else {
            continue;
        };
        match destination.mode {
            Mode::Http if !http_ports.contains(&port) => {
                return Err(InvalidInput::Conflict(format!(
                    "srcPort {port} of an HTTP destination is not a port the proxy serves HTTP on ({}): give one of them, or reqMode=tcp for a TCP frontend of its own",
                    list_addresses(binds)
                )));
            }
            Mode::Http => {}
            Mode::Tcp => {
                if http_ports.contains(&port) {
                    return Err(InvalidInput::Conflict(format!(
                        "srcPort {port} is the proxy's HTTP port: a reqMode=tcp destination needs a port of its own"
                    )));
                }
                if https_binds.iter().any(|bind| bind.port() == port) {
                    return Err(InvalidInput::Conflict(format!(
                        "srcPort {port} is the proxy's HTTPS port: a reqMode=tcp destination needs a port of its own"
                    )));
                }
                if !tcp_ports.insert(port) {
                    return Err(InvalidInput::Conflict(format!(
                        "srcPort {port} is given to two reqMode=tcp destinations of {service}: each needs a port of its own"
                    )));
                }
                let taken_by = others.iter().find(|e| {
                    e.destinations
                        .iter()
                        .any(|d| d.mode == Mode::Tcp && d.src_port == Some(port))
                });
                if let Some(other) = taken_by {
                    return Err(InvalidInput::Conflict(format!(
                        "srcPort {port} is already taken by {}: give another port, or remove that service first",
                        other.route.service
                    )));
                }
            }
        }
    }
    if wanted.options.default_backend {
        if let Some(other) = others.iter().find(|e| e.options.default_backend) {
            return Err(InvalidInput::Conflict(format!(
                "isDefaultBackend: {} is already the default backend; only one service can be (reconfigure it without isDefaultBackend first)",
                other.route.service
            )));
        }
    }
    Ok(())
}

/// Waits until the draining server has no session, then puts it in maintenance and deletes
/// it; stops early when the server is wanted again, was removed by a reload, or the driver
/// is gone.
pub(super) async fn drain_then_delete(inner: Weak<Inner>, key: Draining) {
    let (_, backend, address) = key.clone();
    let target = format!("{backend}/{}", server_name(address));
    loop {
        sleep(POLL_INTERVAL * 2).await;
        let Some(inner) = inner.upgrade() else { return };
        let mut state = inner.state.lock().await;
        if !state.draining.contains(&key) {
            return;
        }
        let pid = state.worker_pid;
        let Ok(stats) = inner.show_stat(pid).await else {
            continue;
        };
        let Some(server) = stats
            .iter()
            .find(|s| s.backend == backend && s.address == address)
        else {
            // A reload dropped it (the configuration never lists draining servers).
            state.draining.remove(&key);
            return;
        };
        if server.sessions > 0 {
            continue;
        }
        if inner.set_state(pid, &target, "maint").await.is_err() {
            continue;
        }
        let reply = inner
            .command(pid, &format!("del server {target}"))
            .await
            .unwrap_or_default();
        if reply.contains("Server deleted.") || reply.contains("No such server") {
            state.draining.remove(&key);
            return;
        }
        // Still has connections attached: retried on the next round.
    }
}

/// Whether two entries render the same HAProxy configuration apart from their servers. The
/// colour is not part of it (one backend per destination, whatever the colour), so a
/// blue-green switch that keeps the routing moves servers through the Runtime API without a
/// reload.
pub(super) fn same_routing(a: &RouteEntry, b: &RouteEntry) -> bool {
    a.route.service == b.route.service
        && a.destinations == b.destinations
        && a.options == b.options
        && a.skip_check == b.skip_check
}
