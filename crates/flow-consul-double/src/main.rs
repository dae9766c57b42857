//! `consul-double`: the in-repo Consul double ([`flow_consul_double::ConsulDouble`]) as a
//! server of its own, so that any Consul client — another language's library, `curl`, a
//! container — can be pointed at it.
//!
//! ```text
//! consul-double --listen 127.0.0.1:8500 [--token SECRET]
//! ```
//!
//! Once it listens it prints its address (`http://127.0.0.1:8500`, the form `CONSUL_HTTP_ADDR`
//! takes) as the only line on standard output, so that a caller that asked for port 0 learns
//! the port it got. It serves until SIGINT or SIGTERM and then exits 0; state is in memory
//! and goes with the process. What the double implements, and what it does not, is in its
//! module documentation and in the README's "Consul double" section.
//!
//! # Why a crate of its own
//!
//! The double is a library (this crate's) so that the crates testing against it get it in
//! process, and a binary beside it so that any client can reach it. Keeping both out of
//! `flow-consul` leaves the product crate with the adapter alone (no server code, no clap),
//! and as a workspace member the binary is always built and its integration test can start
//! it through `CARGO_BIN_EXE_consul-double`.
//!
//! # Exit codes
//!
//! 0 after a signal, 1 when the address cannot be listened on (named in the message), 2 for
//! a usage error (clap's).

#![deny(missing_docs)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use flow_consul_double::ConsulDouble;
use tokio::signal::unix::{signal, SignalKind};

/// A stateful, in-memory double of the parts of Consul's HTTP API docker-flow uses (KV,
/// transactions, sessions and locks, agent services and checks, catalog and health).
#[derive(Debug, Parser)]
#[command(name = "consul-double", version)]
struct Args {
    /// The address to listen on; port 0 picks a free one (the address is printed either way).
    /// The double has no TLS and, without --token, no ACL: keep it on loopback.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8500")]
    listen: SocketAddr,

    /// Answer 403 "Permission denied" to every request not carrying this token
    /// (`X-Consul-Token` header or `?token=`), as Consul does with ACLs on.
    #[arg(
        long,
        value_name = "SECRET",
        env = "CONSUL_DOUBLE_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Both handlers are installed before the address is printed: a caller may signal as soon
    // as it has read it.
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("consul-double: cannot install the SIGINT/SIGTERM handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let double = match ConsulDouble::start_on(args.listen, args.token).await {
        Ok(double) => double,
        Err(e) => {
            eprintln!(
                "consul-double: cannot listen on {}: {e} (pick another --listen address, or port 0 for a free one)",
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    println!("{}", double.address());
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    drop(double);
    ExitCode::SUCCESS
}
