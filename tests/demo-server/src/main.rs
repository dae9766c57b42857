//! `demo-server`: a tiny HTTP/1.1 web server used as docker-flow's demo and test image.
//!
//! It has no dependencies beyond std so that it builds fully static (`crt-static`) and runs
//! alone in a `FROM scratch` image, where there is no shell, no resolver and no libc to load.
//!
//! # Behaviour
//!
//! * Listens on `0.0.0.0:$PORT` (default 8080), one thread per connection, HTTP/1.1
//!   persistent connections (load tests use keep-alive clients, so a release must be
//!   observable on a connection that stays open).
//! * `GET /` answers `200` with the body `<version>\n` and the header `X-Version: <version>`;
//!   the version comes from `DEMO_VERSION` (default `dev`).
//! * `GET /slow` answers like `/` after [`SLOW_RESPONSE`] (2 s): a request in flight while
//!   the proxy in front stops or drains.
//! * `GET /health` answers `200 ok`, or `500 unhealthy` once the server is unhealthy:
//!   `DEMO_UNHEALTHY=1` at start, or after `GET`/`POST /health/fail`.
//! * `demo-server --check [path]` GETs `path` (default `/health`) from `127.0.0.1:$PORT` and
//!   exits 0 on a 2xx answer, 1 otherwise: the Docker `HEALTHCHECK` of a scratch image, which
//!   has no shell or `wget` to do it.
//! * `demo-server --exit <code>` prints one line and exits with `code` at once: a one-shot job
//!   (a migration) that succeeds or fails, for `depends_on: service_completed_successfully`.
//! * Exits 0 promptly on SIGTERM and SIGINT. As PID 1 of a container it would otherwise
//!   ignore SIGTERM, and every `docker stop` would wait for the kill timeout.
//!
//! # Why `unsafe`
//!
//! std has no signal API, so the server declares libc's `signal` (std already links libc)
//! and installs a handler that only stores into an `AtomicBool`, which is async-signal-safe.
//! The accept loop is non-blocking and polls that flag every few milliseconds.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::raw::c_int;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Set by the signal handler; the accept loop stops when it sees it.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// POSIX `SIGINT` (Ctrl-C) on Linux.
const SIGINT: c_int = 2;
/// POSIX `SIGTERM` (what `docker stop` sends by default) on Linux.
const SIGTERM: c_int = 15;

/// How long `GET /slow` takes.
const SLOW_RESPONSE: Duration = Duration::from_secs(2);
/// How long an idle keep-alive connection is kept before its thread gives up on it.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the non-blocking accept loop looks for a stop request when no client connects.
const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(10);

extern "C" {
    /// libc's `signal(2)`: installs `handler` for `signum`, returns the previous handler.
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
}

/// The signal handler: only an atomic store, the one thing that is safe in a handler.
extern "C" fn request_stop(_signum: c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

fn install_stop_handlers() {
    for signum in [SIGINT, SIGTERM] {
        // SAFETY: `request_stop` has the C ABI `signal` expects and only performs an atomic
        // store, which is async-signal-safe; `signal` itself has no other preconditions.
        unsafe {
            signal(signum, request_stop);
        }
    }
}

fn port_from_env() -> Result<u16, String> {
    match std::env::var("PORT") {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("PORT={text:?} is not a port number (1-65535)")),
        Err(_) => Ok(8080),
    }
}

fn main() -> ExitCode {
    let port = match port_from_env() {
        Ok(port) => port,
        Err(message) => {
            eprintln!("demo-server: {message}");
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--check") => {
            let path = args.get(1).map(String::as_str).unwrap_or("/health");
            check(port, path)
        }
        Some("--exit") => {
            let code = args
                .get(1)
                .and_then(|code| code.parse::<u8>().ok())
                .unwrap_or(0);
            println!("demo-server: job done, exiting with code {code}");
            ExitCode::from(code)
        }
        Some(other) => {
            eprintln!(
                "demo-server: unknown argument {other:?}; usage: demo-server [--check [path] | --exit <code>]"
            );
            ExitCode::from(2)
        }
        None => serve(port),
    }
}

/// `--check` mode: one GET on loopback, exit 0 on 2xx.
fn check(port: u16, path: &str) -> ExitCode {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let outcome = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match outcome {
        Ok(answer) => {
            let status_line = answer.lines().next().unwrap_or("").to_string();
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
            println!("{status_line} {body}");
            let code = status_line.split_whitespace().nth(1).unwrap_or("");
            if code.starts_with('2') {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            println!("GET http://{address}{path} failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What every connection thread shares.
struct ServerState {
    version: String,
    unhealthy: AtomicBool,
}

fn serve(port: u16) -> ExitCode {
    install_stop_handlers();
    let state = Arc::new(ServerState {
        version: std::env::var("DEMO_VERSION").unwrap_or_else(|_| "dev".to_string()),
        unhealthy: AtomicBool::new(std::env::var("DEMO_UNHEALTHY").is_ok_and(|v| v == "1")),
    });
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("demo-server: cannot listen on 0.0.0.0:{port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = listener.set_nonblocking(true) {
        eprintln!("demo-server: cannot make the listener non-blocking: {error}");
        return ExitCode::FAILURE;
    }
    println!(
        "demo-server {} listening on 0.0.0.0:{port}{}",
        state.version,
        if state.unhealthy.load(Ordering::SeqCst) {
            " (unhealthy)"
        } else {
            ""
        }
    );
    while !STOP_REQUESTED.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let state = Arc::clone(&state);
                thread::spawn(move || {
                    // A connection error only ends that connection.
                    let _ = handle_connection(stream, &state);
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL_INTERVAL);
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                // Transient (e.g. too many open files): keep serving the others.
                eprintln!("demo-server: accept failed: {error}");
                thread::sleep(ACCEPT_POLL_INTERVAL);
            }
        }
    }
    println!("demo-server {} stopping", state.version);
    ExitCode::SUCCESS
}

/// One parsed request head.
struct Request {
    method: String,
    path: String,
    keep_alive: bool,
    content_length: usize,
}

/// Reads one request head; `None` when the client closed the connection.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("HTTP/1.0").to_string();
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("connection") {
                if value.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            }
        }
    }
    Ok(Some(Request {
        method,
        path,
        keep_alive,
        content_length,
    }))
}

fn handle_connection(stream: TcpStream, state: &ServerState) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IDLE_CONNECTION_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader)? {
        // Discard any request body so the next request on the connection starts cleanly.
        std::io::copy(
            &mut (&mut reader).take(request.content_length as u64),
            &mut std::io::sink(),
        )?;
        let (status, body) = route(&request, state);
        let head_only = request.method == "HEAD";
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Version: {}\r\nConnection: {}\r\n\r\n{}",
            body.len(),
            state.version,
            if request.keep_alive { "keep-alive" } else { "close" },
            if head_only { "" } else { body.as_str() },
        );
        writer.write_all(response.as_bytes())?;
        writer.flush()?;
        if !request.keep_alive {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
    Ok(())
}

fn route(request: &Request, state: &ServerState) -> (&'static str, String) {
    let path = request.path.split('?').next().unwrap_or("");
    let readable = matches!(request.method.as_str(), "GET" | "HEAD");
    match (path, readable, request.method.as_str()) {
        ("/", true, _) => ("200 OK", format!("{}\n", state.version)),
        ("/slow", true, _) => {
            thread::sleep(SLOW_RESPONSE);
            ("200 OK", format!("{}\n", state.version))
        }
        ("/health", true, _) => {
            if state.unhealthy.load(Ordering::SeqCst) {
                ("500 Internal Server Error", "unhealthy\n".to_string())
            } else {
                ("200 OK", "ok\n".to_string())
            }
        }
        ("/health/fail", _, "GET" | "POST") => {
            state.unhealthy.store(true, Ordering::SeqCst);
            ("200 OK", "unhealthy from now on\n".to_string())
        }
        ("/" | "/health" | "/health/fail", _, _) => {
            ("405 Method Not Allowed", "method not allowed\n".to_string())
        }
        _ => ("404 Not Found", "not found\n".to_string()),
    }
}
