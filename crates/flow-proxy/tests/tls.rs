//! TLS termination through the real HAProxy: certificates from `--certs-dir` and uploaded
//! through `PUT cert`, made by a CA of the test's own (rcgen), and checked with a real TLS
//! client (rustls) that trusts that CA only: the chain HAProxy serves for each SNI name, the
//! HTTPS redirect of `httpsOnly`, the certificates restored by a restart, no request failed
//! while certificates change, and the refusals that change nothing.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{config, free_addr, processes, reserved_addr, Backend, TestProxy};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// A certificate authority of the test's own.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    certificate: CertificateDer<'static>,
}

/// A PEM file as the proxy takes it (chain, then key) and the DER of its certificates.
struct Leaf {
    pem: String,
    chain: Vec<CertificateDer<'static>>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap().der().clone();
        Authority {
            issuer: Issuer::new(params, key),
            certificate,
        }
    }

    /// An intermediate CA signed by this one, and its certificate.
    fn intermediate(&self, name: &str) -> (Authority, CertificateDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        (
            Authority {
                issuer: Issuer::new(params, key),
                certificate: certificate.clone(),
            },
            certificate,
        )
    }

    /// A PEM file of a certificate for `name` valid through 2020 only, with its key.
    fn expired_leaf(&self, name: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        format!("{}{}", certificate.pem(), key.serialize_pem())
    }

    /// A server certificate for `names`, followed by `intermediates`, with its key.
    fn leaf(&self, names: &[&str], intermediates: &[CertificateDer<'static>]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain = vec![certificate.der().clone()];
        chain.extend(intermediates.iter().cloned());
        let pem: String = chain.iter().map(|der| pem("CERTIFICATE", der)).collect();
        Leaf {
            pem: format!("{pem}{}", key.serialize_pem()),
            chain,
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A TLS client trusting `authority` only.
fn connector(authority: &Authority) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(authority.certificate.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// What an HTTPS request got: the chain the server presented, the status and the body.
struct Served {
    chain: Vec<CertificateDer<'static>>,
    status: u16,
    headers: String,
    body: String,
}

/// `GET path` over TLS to `address` with SNI and Host `name`, on a new connection; the
/// handshake verifies the chain against the client's CA and the name.
async fn https_get(
    connector: &TlsConnector,
    address: SocketAddr,
    name: &str,
    path: &str,
) -> Result<Served, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = connector.connect(server_name, tcp).await?;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|der| der.clone().into_owned())
        .collect();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    // HAProxy closes without close_notify after `Connection: close`: what was read counts.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok(Served {
        chain,
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

/// `PUT cert?<query>` with `body`: status and JSON answer.
async fn put_cert(proxy: &TestProxy, query: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::put(format!(
        "http://{}/v1/docker-flow-proxy/cert?{query}",
        proxy.api
    ))
    .body(Full::new(Bytes::from(body.to_string())))
    .unwrap();
    let response = client.request(request).await.expect("the API answers");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// The names of the certificates `certs` lists, with their source.
async fn listed(proxy: &TestProxy) -> Vec<(String, String)> {
    let (status, _, json) = proxy.api("/v1/docker-flow-proxy/certs").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["Certs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["Name"].as_str().unwrap().to_string(),
                c["Source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Panics unless the answer is 400 with a message naming `named`.
#[track_caller]
fn assert_bad_request(status: StatusCode, json: &serde_json::Value, named: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let message = json["Message"].as_str().unwrap_or_default();
    assert!(message.contains(named), "{named:?} not in: {message}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn start_tls(state: &Path, certs_dir: Option<&Path>, https: SocketAddr) -> TestProxy {
    let mut config = config(state, free_addr());
    config.https_binds = vec![https];
    config.certs_dir = certs_dir.map(Path::to_path_buf);
    TestProxy::start_with(config).await
}

/// A proxy serving `web` on `/` over HTTPS with one uploaded certificate.
struct Serving {
    authority: Authority,
    state: tempfile::TempDir,
    https: SocketAddr,
    proxy: TestProxy,
    _web: Backend,
}

impl Serving {
    /// Certificate `NAME.pem` for `name`.
    async fn start(name: &str) -> Serving {
        let authority = Authority::new("docker-flow test CA");
        let leaf = authority.leaf(&[name], &[]);
        let state = tempfile::tempdir().unwrap();
        let https = reserved_addr();
        let proxy = start_tls(state.path(), None, https).await;
        let web = Backend::start("web").await;
        let (status, json) = proxy.reconfigure("web", "/", &[web.addr], "").await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let (status, json) = put_cert(&proxy, &format!("certName={name}.pem"), &leaf.pem).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        Serving {
            authority,
            state,
            https,
            proxy,
            _web: web,
        }
    }
}

#[tokio::test]
async fn certificates_are_served_by_sni_from_the_certs_dir_and_uploads_and_restored_on_restart() {
    // Certificate files are owner-only whatever the umask.
    rustix::process::umask(rustix::fs::Mode::empty());
    let authority = Authority::new("docker-flow test CA");
    let (intermediate, intermediate_der) = authority.intermediate("docker-flow test intermediate");
    let a = authority.leaf(&["a.test"], &[]);
    let b = intermediate.leaf(&["b.test", "*.b.test"], &[intermediate_der]);
    let state = tempfile::tempdir().unwrap();
    let certs_dir = tempfile::tempdir().unwrap();
    std::fs::write(certs_dir.path().join("a.pem"), &a.pem).unwrap();
    // Not certificates: hidden files are skipped, as are directories.
    std::fs::create_dir(certs_dir.path().join("..data")).unwrap();
    std::fs::write(certs_dir.path().join(".hidden"), "not a certificate").unwrap();
    let https = reserved_addr();
    let web = Backend::start("web").await;
    let mut proxy = start_tls(state.path(), Some(certs_dir.path()), https).await;
    let (status, json) = proxy.reconfigure("web", "/", &[web.addr], "").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let client = connector(&authority);

    let served = https_get(&client, https, "a.test", "/").await.unwrap();
    assert_eq!(served.chain, a.chain);
    assert_eq!((served.status, served.body.as_str()), (200, "web"));
    assert_eq!(listed(&proxy).await, [("a.pem".into(), "certs-dir".into())]);
    // Over plain HTTP nothing changed.
    assert_eq!(proxy.get("/", None).await, (StatusCode::OK, "web".into()));

    let (status, json) = put_cert(&proxy, "certName=b.pem", &b.pem).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert!(
        json["Message"].as_str().unwrap().contains("b.test"),
        "{json}"
    );
    for name in ["b.test", "www.b.test"] {
        let served = https_get(&client, https, name, "/").await.unwrap();
        assert_eq!(
            served.chain, b.chain,
            "{name}: the leaf and its intermediate"
        );
        assert_eq!((served.status, served.body.as_str()), (200, "web"));
    }
    let served = https_get(&client, https, "a.test", "/").await.unwrap();
    assert_eq!(served.chain, a.chain, "SNI picks between the certificates");
    assert_eq!(
        listed(&proxy).await,
        [
            ("a.pem".into(), "certs-dir".into()),
            ("b.pem".into(), "upload".into())
        ]
    );
    let (_, _, answer) = proxy.api_text("GET", "/v1/docker-flow-proxy/certs").await;
    assert!(!answer.contains("PRIVATE KEY"), "{answer}");
    assert!(answer.contains("BEGIN CERTIFICATE"), "{answer}");
    for file in ["certs/b.pem", "certs-dir/a.pem"] {
        assert_eq!(mode(&state.path().join(file)), 0o600, "{file}");
    }
    for directory in ["certs", "certs-dir"] {
        assert_eq!(mode(&state.path().join(directory)), 0o700, "{directory}");
    }

    // A restart restores the upload and reads the directory again.
    proxy.stop().await;
    let mut proxy = start_tls(state.path(), Some(certs_dir.path()), https).await;
    for (name, leaf) in [("a.test", &a), ("b.test", &b)] {
        let served = https_get(&client, https, name, "/").await.unwrap();
        assert_eq!(served.chain, leaf.chain, "{name} after a restart");
        assert_eq!(served.status, 200);
    }
    // HAProxy left serving and adopted by the next start: a certificate renewed in the
    // directory meanwhile is loaded (its fingerprint is in the configuration).
    let renewed = authority.leaf(&["a.test"], &[]);
    std::fs::write(certs_dir.path().join("a.pem"), &renewed.pem).unwrap();
    proxy.running.take().unwrap().detach().await;
    let proxy = start_tls(state.path(), Some(certs_dir.path()), https).await;
    assert!(proxy.running.as_ref().unwrap().adopted_master().is_some());
    let served = https_get(&client, https, "a.test", "/").await.unwrap();
    assert_eq!(served.chain, renewed.chain, "the renewed certificate");
    let served = https_get(&client, https, "b.test", "/").await.unwrap();
    assert_eq!(served.chain, b.chain);

    // An upload under the name of a --certs-dir file is refused.
    let (status, json) = put_cert(&proxy, "certName=a.pem", &b.pem).await;
    assert_bad_request(status, &json, "--certs-dir");
}

#[tokio::test]
async fn https_only_redirects_plain_http_to_the_https_address() {
    let authority = Authority::new("docker-flow test CA");
    let leaf = authority.leaf(&["shop.test"], &[]);
    let state = tempfile::tempdir().unwrap();
    let (https, second_https) = (reserved_addr(), reserved_addr());
    let mut config = config(state.path(), free_addr());
    config.https_binds = vec![https, second_https];
    let proxy = TestProxy::start_with(config).await;
    // No certificate yet: HTTPS does not listen (HAProxy needs one), and the list says why.
    let (_, _, json) = proxy.api("/v1/docker-flow-proxy/certs").await;
    assert!(
        json["Message"]
            .as_str()
            .unwrap()
            .contains("no certificates yet"),
        "{json}"
    );
    assert!(tokio::net::TcpStream::connect(https).await.is_err());
    let (status, json) = put_cert(&proxy, "certName=shop.pem", &leaf.pem).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let secure = Backend::start("secure").await;
    let behind = Backend::start("behind").await;
    let (status, json) = proxy
        .reconfigure(
            "secure",
            "/secure",
            &[secure.addr],
            "&httpsOnly=true&httpsRedirectCode=301",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    // Redirects only what a terminator in front did not mark HTTPS: requests over the
    // proxy's own TLS are marked, so they are not redirected again.
    let (status, json) = proxy
        .reconfigure(
            "behind",
            "/behind",
            &[behind.addr],
            "&redirectUnlessHttpsProto=true",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");

    let client = common::client(false);
    let request = Request::get(format!("http://{}/secure/x?y=1", proxy.bind))
        .header("Host", format!("shop.test:{}", proxy.bind.port()))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("https://shop.test:{}/secure/x?y=1", https.port())
    );

    let tls = connector(&authority);
    let served = https_get(&tls, https, "shop.test", "/secure/x?y=1")
        .await
        .unwrap();
    assert_eq!((served.status, served.body.as_str()), (200, "secure"));
    let served = https_get(&tls, https, "shop.test", "/behind")
        .await
        .unwrap();
    assert_eq!(
        (served.status, served.body.as_str()),
        (200, "behind"),
        "{}",
        served.headers
    );
    let (status, _) = proxy.get("/behind", Some("shop.test")).await;
    assert_eq!(status, StatusCode::FOUND, "plain HTTP is still redirected");

    // denyHttp: over TLS the request goes through.
    let strict = Backend::start("strict").await;
    let (status, json) = proxy
        .reconfigure("strict", "/strict", &[strict.addr], "&denyHttp=true")
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(proxy.get("/strict", None).await.0, StatusCode::FORBIDDEN);
    let served = https_get(&tls, https, "shop.test", "/strict")
        .await
        .unwrap();
    assert_eq!((served.status, served.body.as_str()), (200, "strict"));

    // httpsPort: what came over HTTPS goes to the servers' other port; srcHttpsPort: only on
    // that HTTPS address.
    let plain = Backend::start("plain").await;
    let over_tls = Backend::start("over-tls").await;
    let (status, json) = proxy
        .reconfigure(
            "dual",
            "/dual",
            &[plain.addr],
            &format!(
                "&httpsPort={}&srcHttpsPort={}",
                over_tls.addr.port(),
                second_https.port()
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        proxy.get("/dual", None).await,
        (StatusCode::OK, "plain".into())
    );
    let served = https_get(&tls, second_https, "shop.test", "/dual")
        .await
        .unwrap();
    assert_eq!((served.status, served.body.as_str()), (200, "over-tls"));
    let served = https_get(&tls, https, "shop.test", "/dual").await.unwrap();
    assert_eq!(served.status, 503, "not routed on the other HTTPS address");
    let (status, json) = proxy
        .reconfigure("dual", "/dual", &[plain.addr], "&srcHttpsPort=1")
        .await;
    assert_bad_request(status, &json, "srcHttpsPort 1");
}

/// curl (OpenSSL) as a second real client: it verifies the chain against the CA file and
/// speaks HTTP/2, which the HTTPS addresses offer through ALPN.
#[tokio::test]
async fn curl_verifies_the_chain_and_speaks_http2() {
    // Bound whole: its backend and state directory must outlive the requests.
    let serving = Serving::start("h2.test").await;
    let (authority, state, https) = (&serving.authority, &serving.state, serving.https);
    let ca_file = state.path().join("test-ca.pem");
    std::fs::write(&ca_file, pem("CERTIFICATE", &authority.certificate)).unwrap();
    let curl = |name: &str| {
        // tokio's Command: the backend answers on this test's runtime meanwhile.
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["--silent", "--show-error", "--http2", "--max-time", "10"])
            .arg("--cacert")
            .arg(&ca_file)
            .arg("--resolve")
            .arg(format!("{name}:{}:{}", https.port(), https.ip()))
            .args(["--write-out", " %{http_version} %{http_code}"])
            .arg(format!("https://{name}:{}/", https.port()));
        async move {
            let output = command
                .output()
                .await
                .expect("curl is installed (apt-get install curl)");
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (ok, stdout, stderr) = curl("h2.test").await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "web 2 200");
    // A name the certificate does not have: the default certificate is served, and curl
    // refuses it.
    let (ok, _, stderr) = curl("other.test").await;
    assert!(!ok);
    assert!(stderr.contains("certificate"), "{stderr}");
}

#[tokio::test]
async fn changing_certificates_fails_no_request() {
    let serving = Serving::start("load.test").await;
    let (authority, https, proxy) = (&serving.authority, serving.https, &serving.proxy);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tls = connector(authority);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let tls = tls.clone();
        let stopped = stopped.clone();
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            // Bounded: at most 2,000 requests per client.
            while !*stopped.borrow() && ok + (failed.len() as u32) < 2_000 {
                match https_get(&tls, https, "load.test", "/").await {
                    Ok(served) if served.status == 200 && served.body == "web" => ok += 1,
                    Ok(served) => failed.push(format!("{} {}", served.status, served.body)),
                    Err(error) => failed.push(error.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    // Renewals of the certificate and new ones, each a reload.
    let started = std::time::Instant::now();
    let mut uploads = Vec::new();
    for round in 0..5 {
        let renewed = authority.leaf(&["load.test"], &[]);
        let upload = std::time::Instant::now();
        let (status, json) = put_cert(proxy, "certName=load.test.pem", &renewed.pem).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        uploads.push(upload.elapsed());
        let other = authority.leaf(&[&format!("other{round}.test")], &[]);
        let upload = std::time::Instant::now();
        let (status, json) =
            put_cert(proxy, &format!("certName=other{round}.pem"), &other.pem).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        uploads.push(upload.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    let mut total = 0;
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
        total += ok;
    }
    assert!(total > 20, "only {total} requests ran");
    uploads.sort();
    eprintln!(
        "certificate figures: {total} HTTPS requests (a TLS handshake each) in {:?} over {} uploads, 0 failed; upload answered in median {:?}, max {:?}",
        started.elapsed(),
        uploads.len(),
        uploads[uploads.len() / 2],
        uploads[uploads.len() - 1]
    );
    assert_eq!(listed(proxy).await.len(), 6);
}

#[tokio::test]
async fn bad_certificates_are_refused_400_and_change_nothing() {
    let authority = Authority::new("docker-flow test CA");
    let good = authority.leaf(&["good.test"], &[]);
    let other = authority.leaf(&["good.test"], &[]);
    let certificate_only: String = good
        .chain
        .iter()
        .map(|der| pem("CERTIFICATE", der))
        .collect();
    let other_key = other.pem[other.pem.find("-----BEGIN PRIVATE KEY").unwrap()..].to_string();
    let expired = authority.expired_leaf("old.test");
    let state = tempfile::tempdir().unwrap();
    let https = reserved_addr();
    let proxy = start_tls(state.path(), None, https).await;
    let (status, json) = put_cert(&proxy, "certName=good.pem", &good.pem).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let config_before = proxy.config_text(state.path());

    for (query, body, named) in [
        (
            "certName=bad.pem",
            "this is not a certificate".to_string(),
            "holds no certificate",
        ),
        (
            "certName=bad.pem",
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n".to_string(),
            "is not a valid PEM file",
        ),
        (
            "certName=bad.pem",
            certificate_only.clone(),
            "holds no private key",
        ),
        (
            "certName=bad.pem",
            format!("{certificate_only}{other_key}"),
            "does not match the first certificate",
        ),
        ("certName=bad.pem", expired.clone(), "expired on 2021-01-01"),
        // Replacing a served certificate with a bad one leaves the served one.
        (
            "certName=good.pem",
            format!("{certificate_only}{other_key}"),
            "does not match",
        ),
        ("certName=../x.pem", good.pem.clone(), "invalid certName"),
        ("", good.pem.clone(), "certName is missing"),
        (
            "certName=x.pem&distribute=true",
            good.pem.clone(),
            "distribute is not supported",
        ),
        (
            "certName=x.pem&nonsense=1",
            good.pem.clone(),
            "unknown parameter nonsense",
        ),
    ] {
        let (status, json) = put_cert(&proxy, query, &body).await;
        assert_bad_request(status, &json, named);
    }
    let too_large = "x".repeat(2 * 1024 * 1024);
    let (status, json) = put_cert(&proxy, "certName=big.pem", &too_large).await;
    assert_bad_request(status, &json, "larger than");

    assert_eq!(listed(&proxy).await, [("good.pem".into(), "upload".into())]);
    assert_eq!(proxy.config_text(state.path()), config_before);
    let files: Vec<String> = std::fs::read_dir(state.path().join("certs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["good.pem"]);
    let served = https_get(&connector(&authority), https, "good.test", "/")
        .await
        .unwrap();
    assert_eq!(
        served.chain, good.chain,
        "the good certificate is still served"
    );

    // Without an HTTPS address a certificate would never be served.
    let plain_state = tempfile::tempdir().unwrap();
    let plain = TestProxy::start(plain_state.path()).await;
    let (status, json) = put_cert(&plain, "certName=good.pem", &good.pem).await;
    assert_bad_request(status, &json, "--bind-https");

    // A bad file in --certs-dir stops the start, naming it.
    let certs_dir = tempfile::tempdir().unwrap();
    std::fs::write(certs_dir.path().join("old.pem"), &expired).unwrap();
    let refused_state = tempfile::tempdir().unwrap();
    let mut config = config(refused_state.path(), free_addr());
    config.https_binds = vec![reserved_addr()];
    config.certs_dir = Some(certs_dir.path().to_path_buf());
    let error = flow_proxy::start(config).await.unwrap_err().to_string();
    assert!(
        error.contains("old.pem") && error.contains("expired"),
        "{error}"
    );

    // --certs-dir without an HTTPS address would serve nothing.
    let mut without_https = common::config(refused_state.path(), free_addr());
    without_https.certs_dir = Some(certs_dir.path().to_path_buf());
    let error = flow_proxy::start(without_https)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("would never be served"), "{error}");
}

/// A stored upload that expired while the proxy was down is still served after the restart,
/// with a warning naming it (refusing to start would stop every service); a stored file that
/// is no certificate stops the start, naming it.
#[tokio::test]
async fn a_stored_certificate_that_expired_is_served_with_a_warning_and_a_broken_one_stops_the_start(
) {
    let authority = Authority::new("docker-flow test CA");
    let expired = authority.expired_leaf("old.test");
    let state = tempfile::tempdir().unwrap();
    let https = reserved_addr();
    // As an upload taken before it expired would lie in the state directory.
    std::fs::create_dir_all(state.path().join("certs")).unwrap();
    std::fs::write(state.path().join("certs/old.pem"), &expired).unwrap();
    let mut proxy = start_tls(state.path(), None, https).await;
    let warnings = proxy
        .running
        .as_ref()
        .unwrap()
        .restore_warnings()
        .join("\n");
    assert!(
        warnings.contains("old.pem") && warnings.contains("expired on 2021-01-01"),
        "{warnings}"
    );
    let (_, _, json) = proxy.api("/v1/docker-flow-proxy/certs").await;
    assert_eq!(json["Certs"][0]["Expired"], true, "{json}");
    // Served: a client that checks validity refuses it for its date.
    let error = match https_get(&connector(&authority), https, "old.test", "/").await {
        Ok(served) => panic!("an expired certificate was accepted ({})", served.status),
        Err(error) => error,
    };
    let refused_for = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            refused_for,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
            ))
        ),
        "{error:?}"
    );
    proxy.stop().await;

    // Without HTTPS addresses the stored certificates are kept, not served, and the start
    // says so.
    let mut plain = TestProxy::start(state.path()).await;
    let warnings = plain
        .running
        .as_ref()
        .unwrap()
        .restore_warnings()
        .join("\n");
    assert!(
        warnings.contains("old.pem are kept but not served"),
        "{warnings}"
    );
    assert_eq!(listed(&plain).await, []);
    plain.stop().await;
    assert!(state.path().join("certs/old.pem").exists());

    std::fs::write(state.path().join("certs/old.pem"), "damaged").unwrap();
    let mut config = config(state.path(), free_addr());
    config.https_binds = vec![https];
    let error = flow_proxy::start(config).await.unwrap_err().to_string();
    assert!(
        error.contains("certs/old.pem") && error.contains("holds no certificate"),
        "{error}"
    );
}

/// A killed HAProxy master is restarted by the supervisor with the certificates: HTTPS is
/// served again, with the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_haproxy_is_restarted_with_its_certificates() {
    let serving = Serving::start("restart.test").await;
    let client = connector(&serving.authority);
    let before = https_get(&client, serving.https, "restart.test", "/")
        .await
        .unwrap();
    assert_eq!((before.status, before.body.as_str()), (200, "web"));
    let (master, _) = processes(serving.state.path()).await;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(master).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let killed = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(served) = https_get(&client, serving.https, "restart.test", "/").await {
            let master_socket = serving.state.path().join("master.sock");
            let restarted = tokio::net::UnixStream::connect(&master_socket)
                .await
                .is_ok()
                && processes(serving.state.path()).await.0 != master;
            if served.status == 200 && restarted {
                assert_eq!(served.chain, before.chain);
                break;
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "HTTPS not served again within 3 s of killing the master"
        );
    }
}
