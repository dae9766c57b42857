//! The `consul-double` binary as its users see it: py-consul (a Consul client from PyPI that
//! no one here wrote) drives it through `tests/py_consul_client.py`, and the process starts,
//! prints its address and stops on a signal as documented.
//!
//! With `FLOW_TEST_CONSUL_ADDR` set (e.g. `http://127.0.0.1:8500`), the same script runs
//! against that Consul instead, which is how the script's expectations are kept honest: they
//! must hold for a real Consul too.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

const BINARY: &str = env!("CARGO_BIN_EXE_consul-double");

/// A running `consul-double`, killed if a test ends without stopping it.
struct Double {
    child: Child,
    address: String,
}

impl Double {
    /// Starts the binary on a free loopback port and reads the address it prints.
    fn start(extra: &[&str]) -> Double {
        let mut child = Command::new(BINARY)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("consul-double starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("consul-double's stdout is readable");
        let address = line.trim().to_string();
        assert!(
            address.starts_with("http://127.0.0.1:") && !address.ends_with(":0"),
            "consul-double printed {address:?} instead of the address it listens on"
        );
        Double { child, address }
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(Pid::from_raw)
            .expect("a child has a valid pid");
        kill_process(pid, signal).expect("the double can be signalled");
    }

    /// Waits at most `limit` for the process to exit.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("the double can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "consul-double did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the py-consul script against `address`; panics (never skips) when python3 or
/// py-consul is missing, naming what installs them.
fn run_script(address: &str) -> (ExitStatus, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py_consul_client.py");
    let output = Command::new("python3")
        .arg(&script)
        .env("CONSUL_HTTP_ADDR", address)
        // The agent the script talks to is the one named above, with no token of the
        // caller's environment.
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_SSL")
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install it and py-consul with scripts/test (tests/requirements.txt)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

#[test]
fn py_consul_accepts_the_double_as_consul() {
    let external = std::env::var("FLOW_TEST_CONSUL_ADDR")
        .ok()
        .filter(|a| !a.is_empty());
    let double = match &external {
        Some(_) => None,
        None => Some(Double::start(&[])),
    };
    let address = external
        .clone()
        .or_else(|| double.as_ref().map(|d| d.address.clone()))
        .expect("an address to test against");
    let (status, output) = run_script(&address);
    println!("{output}");
    assert_ne!(
        status.code(),
        Some(2),
        "py-consul is not installed for python3: run scripts/test (it installs tests/requirements.txt)"
    );
    assert!(
        status.success(),
        "the py-consul script failed against {address} ({status}); its output is above"
    );
    assert!(output.contains("all steps held"), "{output}");
}

#[test]
fn stops_cleanly_on_sigterm_and_sigint() {
    for signal in [Signal::TERM, Signal::INT] {
        let mut double = Double::start(&[]);
        double.signal(signal);
        let status = double.wait(Duration::from_secs(10));
        assert!(
            status.success(),
            "consul-double ended with {status} on {signal:?}"
        );
    }
}

#[test]
fn a_taken_address_is_exit_1_naming_it() {
    let first = Double::start(&[]);
    let taken = first.address.trim_start_matches("http://").to_string();
    let output = Command::new(BINARY)
        .args(["--listen", &taken])
        .output()
        .expect("consul-double runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&taken), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "printed an address it does not listen on"
    );
}

#[test]
fn a_bad_listen_address_is_a_usage_error() {
    let output = Command::new(BINARY)
        .args(["--listen", "localhost"])
        .output()
        .expect("consul-double runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn with_a_token_requests_without_it_are_denied() {
    let mut double = Double::start(&["--token", "s3cret"]);
    let address = double.address.trim_start_matches("http://").to_string();
    let get = |extra: &str| {
        let mut stream = std::net::TcpStream::connect(&address).expect("the double accepts");
        std::io::Write::write_all(
            &mut stream,
            format!("GET /v1/kv/x HTTP/1.1\r\nHost: {address}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .expect("the request is sent");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("the answer is read");
        answer
    };
    let denied = get("");
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(denied.ends_with("Permission denied"), "{denied}");
    let allowed = get("X-Consul-Token: s3cret\r\n");
    assert!(allowed.starts_with("HTTP/1.1 404"), "{allowed}");
    double.signal(Signal::TERM);
    assert!(double.wait(Duration::from_secs(10)).success());
}
