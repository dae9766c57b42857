//! Docker Flow 1.x `reconfigure` parameters beyond paths and servers, each shown by its
//! effect on requests through a real HAProxy to real loopback servers: several destinations
//! of one service, domain lists and wildcards, basic authentication, headers, path rewrites,
//! redirects, method filters, timeouts, the default backend, exclusions, route order, and
//! TCP frontends. Bad values are 400 naming the parameter and change nothing.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, config, free_addr, TestProxy};
use flow_core::{Color, PathType, Proxy, Route, ServiceName};
use flow_proxy::HttpProxy;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An HTTP server answering every request with its name, the method, the path and query it
/// saw and every request header (`name: value` lines), plus a response header `X-Internal`;
/// a path ending in `/slow` waits 4 s first.
struct Echo {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    async fn start(name: &'static str) -> Echo {
        Echo::start_on(name, "127.0.0.1:0").await
    }

    async fn start_on(name: &'static str, address: &str) -> Echo {
        let listener = TcpListener::bind(address).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: Request<hyper::body::Incoming>| async move {
                            if request.uri().path().ends_with("/slow") {
                                tokio::time::sleep(Duration::from_secs(4)).await;
                            }
                            let mut body = format!(
                                "{name}\n{} {}\n",
                                request.method(),
                                request
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.as_str())
                                    .unwrap_or("")
                            );
                            for (header, value) in request.headers() {
                                body.push_str(&format!(
                                    "{header}: {}\n",
                                    value.to_str().unwrap_or("?")
                                ));
                            }
                            let response = hyper::Response::builder()
                                .header("X-Internal", "1")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Echo { addr, task }
    }
}

/// A TCP server writing back what it reads.
async fn tcp_echo() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Percent-encodes a query value.
fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `reconfigure?{query}`: status and answer.
async fn reconfigure(proxy: &TestProxy, query: &str) -> (StatusCode, serde_json::Value) {
    let (status, _, answer) = proxy
        .api(&format!("/v1/docker-flow-proxy/reconfigure?{query}"))
        .await;
    (status, answer)
}

/// Sends `method path` to the proxy's frontend on a new connection with `headers` (a `Host`
/// among them replaces the default one).
async fn send(
    proxy: &TestProxy,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.bind));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client(false)
        .request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .expect("the proxy's frontend answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn get(proxy: &TestProxy, path: &str) -> (StatusCode, String) {
    let (status, _, body) = send(proxy, Method::GET, path, &[]).await;
    (status, body)
}

async fn get_host(proxy: &TestProxy, path: &str, host: &str) -> (StatusCode, String) {
    let (status, _, body) = send(proxy, Method::GET, path, &[("Host", host)]).await;
    (status, body)
}

/// The first line of an echo body: the name of the server that answered.
fn served_by(body: &str) -> &str {
    body.lines().next().unwrap_or_default()
}

fn assert_ok(status: StatusCode, answer: &serde_json::Value) {
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["Status"], "OK", "{answer}");
}

/// Asserts a 400 whose message names `parameter`.
fn assert_refused(status: StatusCode, answer: &serde_json::Value, parameter: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["Message"].as_str().unwrap_or_default();
    assert!(
        message.contains(parameter),
        "the message does not name {parameter}: {message}"
    );
}

/// Sends `reconfigure?{base}&{parameter}={value}` for each case (the value percent-encoded)
/// and asserts each is a 400 naming `names` (the parameter itself when empty).
async fn assert_each_refused(proxy: &TestProxy, base: &str, cases: &[(&str, &str, &str)]) {
    for (parameter, value, names) in cases {
        let (status, answer) =
            reconfigure(proxy, &format!("{base}&{parameter}={}", enc(value))).await;
        let names = if names.is_empty() { parameter } else { names };
        assert_refused(status, &answer, names);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_destinations_reach_their_own_port_and_switch_together() {
    let state = tempfile::tempdir().unwrap();
    let mut proxy = TestProxy::start(state.path()).await;
    // One instance with two ports (a web port and an admin port), on 127.0.0.1; its next
    // release on 127.0.0.2 with the same ports.
    let web = Echo::start("web-1").await;
    let admin = Echo::start("admin-1").await;
    let (web_port, admin_port) = (web.addr.port(), admin.addr.port());
    let _web2 = Echo::start_on("web-2", &format!("127.0.0.2:{web_port}")).await;
    let _admin2 = Echo::start_on("admin-2", &format!("127.0.0.2:{admin_port}")).await;

    let query = |ip: &str| {
        format!(
            "serviceName=app&servers={ip}:{web_port}&servicePath.1=/web&port.1={web_port}&srcPort.1={}&servicePath.2=/admin&port.2={admin_port}",
            proxy.bind.port()
        )
    };
    let (status, answer) = reconfigure(&proxy, &query("127.0.0.1")).await;
    assert_ok(status, &answer);
    assert_eq!(served_by(&get(&proxy, "/web/x").await.1), "web-1");
    assert_eq!(served_by(&get(&proxy, "/admin").await.1), "admin-1");
    assert_eq!(
        get(&proxy, "/other").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The next release: both destinations move to the new instance, without a reload.
    let before = proxy.config_text(state.path());
    let (status, answer) = reconfigure(&proxy, &query("127.0.0.2")).await;
    assert_ok(status, &answer);
    assert_eq!(served_by(&get(&proxy, "/web/x").await.1), "web-2");
    assert_eq!(served_by(&get(&proxy, "/admin").await.1), "admin-2");
    let after = proxy.config_text(state.path());
    assert_ne!(before, after, "the configuration lists the new servers");
    assert!(
        after.contains(&format!("127.0.0.2:{admin_port}")),
        "{after}"
    );
    drop((web, admin));

    // `port` alone: the servers' address on that port.
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=ops&servers=127.0.0.2:{web_port}&servicePath=/ops&port={admin_port}"),
    )
    .await;
    assert_ok(status, &answer);
    assert_eq!(served_by(&get(&proxy, "/ops").await.1), "admin-2");

    // An HTTP srcPort must be a port the proxy serves HTTP on.
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=bad&servers=127.0.0.2:{web_port}&servicePath=/bad&srcPort=1"),
    )
    .await;
    assert_refused(status, &answer, "srcPort");
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=bad&servers=127.0.0.2:{web_port}&servicePath.0=/bad"),
    )
    .await;
    assert_refused(status, &answer, "servicePath.0");
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=bad&servers=127.0.0.2:{web_port}&servicePath.1=/bad&port.2=80"),
    )
    .await;
    assert_refused(status, &answer, "servicePath.2");

    // Restored with both destinations after a restart, from a table of the new format.
    proxy.stop().await;
    let table = std::fs::read_to_string(state.path().join("routes.json")).unwrap();
    assert!(table.contains("\"version\": 2"), "{table}");
    let proxy = TestProxy::start_with(config(state.path(), proxy.bind)).await;
    assert_eq!(served_by(&get(&proxy, "/web").await.1), "web-2");
    assert_eq!(served_by(&get(&proxy, "/admin").await.1), "admin-2");
    assert_eq!(served_by(&get(&proxy, "/ops").await.1), "admin-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_whose_servers_are_not_up_is_rolled_back() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let app = Echo::start("app").await;
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=app&servers={}&servicePath=/a", app.addr),
    )
    .await;
    assert_ok(status, &answer);
    let config_before = proxy.config_text(state.path());

    let dead_port = free_addr().port();
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=app&servers={}&servicePath=/a&servicePath.1=/b&port.1={dead_port}",
            app.addr
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["Error"], "NotUp");
    assert_eq!(
        answer["NotUpServers"],
        serde_json::json!([format!("127.0.0.1:{dead_port}")])
    );
    assert_eq!(served_by(&get(&proxy, "/a").await.1), "app");
    assert_eq!(get(&proxy, "/b").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(proxy.config_text(state.path()), config_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_lists_wildcards_and_domain_only_routes() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let site = Echo::start("site").await;
    let api = Echo::start("api").await;

    // No servicePath: the domains' every path, like 1.x.
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=site&servers={}&serviceDomain={}",
            site.addr,
            enc("site.example,*.site.example")
        ),
    )
    .await;
    assert_ok(status, &answer);
    assert_eq!(answer["ServiceDomain"], "site.example,*.site.example");
    assert_eq!(answer["ServicePath"], serde_json::json!(["/"]));
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=api&servers={}&servicePath=/api", api.addr),
    )
    .await;
    assert_ok(status, &answer);

    for host in [
        "site.example",
        "SITE.example:8080",
        "www.site.example",
        "a.b.site.example",
    ] {
        let (status, body) = get_host(&proxy, "/api/anything", host).await;
        assert_eq!(
            (status, served_by(&body)),
            (StatusCode::OK, "site"),
            "{host}"
        );
    }
    for host in ["other.example", "notsite.example", "site.example.com"] {
        let (status, body) = get_host(&proxy, "/api/x", host).await;
        assert_eq!(
            (status, served_by(&body)),
            (StatusCode::OK, "api"),
            "{host}"
        );
        assert_eq!(
            get_host(&proxy, "/x", host).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{host}"
        );
    }

    let base = format!("serviceName=bad&servers={}", api.addr);
    let cases: Vec<(&str, &str, &str)> = [
        "*",
        "*.",
        "a.*.example",
        "**.example",
        "site.example\nbackend x",
        "*example.com",
    ]
    .into_iter()
    .map(|bad| ("serviceDomain", bad, ""))
    .collect();
    assert_each_refused(&proxy, &base, &cases).await;
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=bad&servers={}&serviceDomain=a.example&pathType=path",
            api.addr
        ),
    )
    .await;
    assert_refused(status, &answer, "pathType");
}

/// `openssl passwd -6 -salt abcdefgh secret`: the SHA-512 crypt(3) hash of `secret`.
const SECRET_HASH: &str =
    "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.";

/// `Basic` credentials of `user:password`.
fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    // Base64 by hand (RFC 4648): the test needs nothing more.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("Basic ");
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_authentication_lets_only_the_users_in() {
    let state = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(
        secrets.path().join("dfp_users_team"),
        "carol:c4rol-pw\ndave:d4ve\n",
    )
    .unwrap();
    let mut serve = config(state.path(), free_addr());
    serve.secrets_dir = secrets.path().to_path_buf();
    let proxy = TestProxy::start_with(serve).await;
    let app = Echo::start("app").await;

    let password = "s3cr3t-pa$$";
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=app&servers={}&servicePath=/app&users={}",
            app.addr,
            enc(&format!("alice:{password}, bob:other"))
        ),
    )
    .await;
    assert_ok(status, &answer);
    assert!(
        !answer.to_string().contains(password),
        "the answer shows a password: {answer}"
    );

    let (status, headers, _) = send(&proxy, Method::GET, "/app", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic realm="));
    let wrong = basic("alice", "nope");
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[("Authorization", &wrong)])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let right = basic("alice", password);
    let (status, _, body) = send(&proxy, Method::GET, "/app", &[("Authorization", &right)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(served_by(&body), "app");
    assert!(
        !body.to_lowercase().contains("authorization:"),
        "the server saw the credentials: {body}"
    );
    let bob = basic("bob", "other");
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[("Authorization", &bob)])
            .await
            .0,
        StatusCode::OK
    );

    // ignoreAuthorization: a destination of the service open to everyone.
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=app&servers={}&servicePath=/app&servicePath.1=/open&ignoreAuthorization.1=true&users={}",
            app.addr,
            enc(&format!("alice:{password}"))
        ),
    )
    .await;
    assert_ok(status, &answer);
    assert_eq!(get(&proxy, "/open/x").await.0, StatusCode::OK);
    assert_eq!(get(&proxy, "/app").await.0, StatusCode::UNAUTHORIZED);

    // Encrypted passwords: the crypt(3) hash is stored, the password is sent.
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=app&servers={}&servicePath=/app&users={}&usersPassEncrypted=true",
            app.addr,
            enc(&format!("erin:{SECRET_HASH}"))
        ),
    )
    .await;
    assert_ok(status, &answer);
    let erin = basic("erin", "secret");
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[("Authorization", &erin)])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[("Authorization", &right)])
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "alice is no longer a user"
    );

    // usersSecret: the users of the file; a user of `users` without a password takes it
    // from the file.
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=app&servers={}&servicePath=/app&usersSecret=team",
            app.addr
        ),
    )
    .await;
    assert_ok(status, &answer);
    let carol = basic("carol", "c4rol-pw");
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[("Authorization", &carol)])
            .await
            .0,
        StatusCode::OK
    );
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=app&servers={}&servicePath=/app&usersSecret=team&users=dave",
            app.addr
        ),
    )
    .await;
    assert_ok(status, &answer);
    let dave = basic("dave", "d4ve");
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[("Authorization", &dave)])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[("Authorization", &carol)])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Bad input: 400 naming the parameter, never showing the password, nothing changed.
    let config_before = proxy.config_text(state.path());
    for (users, extra, parameter) in [
        ("alice", "", "users"),
        ("alice:with space", "", "users"),
        ("alice:quote'd", "", "users"),
        ("al ice:pw", "", "users"),
        ("alice:not-a-hash!", "&usersPassEncrypted=true", "users"),
        ("alice:pw", "&usersSecret=missing", "usersSecret"),
        ("alice:pw", "&usersSecret=..%2Fx", "usersSecret"),
    ] {
        let (status, answer) = reconfigure(
            &proxy,
            &format!(
                "serviceName=app&servers={}&servicePath=/app&users={}{extra}",
                app.addr,
                enc(users)
            ),
        )
        .await;
        assert_refused(status, &answer, parameter);
        if let Some((_, password)) = users.split_once(':') {
            assert!(!answer.to_string().contains(password), "{answer}");
        }
    }
    assert_eq!(proxy.config_text(state.path()), config_before);
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[("Authorization", &dave)])
            .await
            .0,
        StatusCode::OK
    );

    // A restarted proxy protects the service the same way, from the stored route (the
    // secret's file is not read again).
    let bind = proxy.bind;
    drop(proxy);
    std::fs::remove_file(secrets.path().join("dfp_users_team")).unwrap();
    let proxy = TestProxy::start_with(config(state.path(), bind)).await;
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&proxy, Method::GET, "/app", &[("Authorization", &dave)])
            .await
            .0,
        StatusCode::OK
    );
    assert!(!format!("{:?}", proxy.running).contains("d4ve"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_path_rewrites_reach_the_server() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let app = Echo::start("app").await;

    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=app&servers={}&servicePath=/api&addReqHeader={}&setReqHeader={}&delReqHeader={}&addResHeader={}&setResHeader={}&delResHeader=X-Internal&reqPathSearchReplace={}",
            app.addr,
            enc("X-Env prod,X-Team web team"),
            enc("X-Forwarded-Proto https"),
            enc("X-Secret,Cookie"),
            enc("X-Served-By docker-flow"),
            enc("Cache-Control no-store"),
            enc("^/api/,/:/v1/,/v2/"),
        ),
    )
    .await;
    assert_ok(status, &answer);
    let (status, headers, body) = send(
        &proxy,
        Method::GET,
        "/api/v1/items?q=1",
        &[
            ("X-Secret", "hidden"),
            ("Cookie", "a=b"),
            ("X-Forwarded-Proto", "http"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[1], "GET /v2/items?q=1", "{body}");
    assert!(lines.contains(&"x-env: prod"), "{body}");
    assert!(lines.contains(&"x-team: web team"), "{body}");
    assert!(lines.contains(&"x-forwarded-proto: https"), "{body}");
    assert!(!lines.contains(&"x-forwarded-proto: http"), "{body}");
    assert!(
        !body.contains("x-secret") && !body.contains("cookie"),
        "{body}"
    );
    assert_eq!(headers["x-served-by"], "docker-flow");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(!headers.contains_key("x-internal"));

    // Nothing that could end a header or inject configuration is taken.
    let config_before = proxy.config_text(state.path());
    let base = format!("serviceName=app&servers={}&servicePath=/api", app.addr);
    assert_each_refused(
        &proxy,
        &base,
        &[
            ("addReqHeader", "X-A a\r\nX-Injected: 1", ""),
            ("setResHeader", "X-A a\nb", ""),
            ("addReqHeader", "X-A %[env(FLOW_PROXY_TOKEN)]", ""),
            ("addReqHeader", "X-A it's", ""),
            ("addReqHeader", "X-A on if { ssl_fc }", ""),
            ("addReqHeader", "X-A", ""),
            ("delReqHeader", "X A", ""),
            ("setReqHeader", "X:A b", ""),
            ("reqPathSearchReplace", "(a),b", ""),
            ("reqPathSearchReplace", "/a", ""),
            ("reqPathSearchReplace", "/a,/b c", ""),
            ("reqPathSearchReplace", "[,/x", ""),
        ],
    )
    .await;
    assert_eq!(proxy.config_text(state.path()), config_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_https_and_from_other_domains() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let app = Echo::start("app").await;

    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=site&servers={}&serviceDomain=new.example&redirectFromDomain={}",
            app.addr,
            enc("old.example,*.old.example")
        ),
    )
    .await;
    assert_ok(status, &answer);
    for host in ["old.example", "www.old.example:8080"] {
        let (status, headers, _) = send(&proxy, Method::GET, "/a/b?c=d", &[("Host", host)]).await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY, "{host}");
        assert_eq!(headers["location"], "http://new.example/a/b?c=d", "{host}");
    }
    assert_eq!(
        served_by(&get_host(&proxy, "/a", "new.example").await.1),
        "app"
    );

    // httpsOnly: every request that did not come over TLS is sent to HTTPS (302, or the code
    // given).
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=secure&servers={}&servicePath=/secure&httpsOnly=true",
            app.addr
        ),
    )
    .await;
    assert_ok(status, &answer);
    let (status, headers, _) = send(
        &proxy,
        Method::GET,
        "/secure/x",
        &[("Host", "shop.example")],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "https://shop.example/secure/x");
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=secure&servers={}&servicePath=/secure&httpsOnly=true&httpsRedirectCode=308",
            app.addr
        ),
    )
    .await;
    assert_ok(status, &answer);
    let (status, _, _) = send(
        &proxy,
        Method::GET,
        "/secure/x",
        &[("Host", "shop.example")],
    )
    .await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);

    // redirectWhenHttpProto: a TLS terminator in front said the client came over HTTP.
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=behind&servers={}&servicePath=/behind&redirectWhenHttpProto=true&httpsRedirectCode=301",
            app.addr
        ),
    )
    .await;
    assert_ok(status, &answer);
    let (status, headers, _) = send(
        &proxy,
        Method::GET,
        "/behind",
        &[("Host", "shop.example"), ("X-Forwarded-Proto", "http")],
    )
    .await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "https://shop.example/behind");
    let (status, _, body) = send(
        &proxy,
        Method::GET,
        "/behind",
        &[("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!((status, served_by(&body)), (StatusCode::OK, "app"));

    // redirectUnlessHttpsProto: only what a TLS terminator marked as HTTPS is let through.
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=behind&servers={}&servicePath=/behind&redirectUnlessHttpsProto=true",
            app.addr
        ),
    )
    .await;
    assert_ok(status, &answer);
    let (status, headers, _) =
        send(&proxy, Method::GET, "/behind", &[("Host", "shop.example")]).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "https://shop.example/behind");
    let (status, _, body) = send(
        &proxy,
        Method::GET,
        "/behind",
        &[("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!((status, served_by(&body)), (StatusCode::OK, "app"));

    // denyHttp: a request that did not arrive over TLS is denied.
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=tls-only&servers={}&servicePath=/tls-only&denyHttp=true",
            app.addr
        ),
    )
    .await;
    assert_ok(status, &answer);
    assert_eq!(get(&proxy, "/tls-only").await.0, StatusCode::FORBIDDEN);

    let base = format!("serviceName=bad&servers={}", app.addr);
    assert_each_refused(
        &proxy,
        &base,
        &[
            ("servicePath=/x&denyHttp", "maybe", "denyHttp"),
            (
                "servicePath=/x&redirectUnlessHttpsProto",
                "1",
                "redirectUnlessHttpsProto",
            ),
            (
                "servicePath=/x&httpsRedirectCode",
                "200",
                "httpsRedirectCode",
            ),
            ("servicePath=/x&httpsOnly", "yes", "httpsOnly"),
            (
                "servicePath=/x&redirectFromDomain",
                "old.example",
                "redirectFromDomain",
            ),
            (
                "serviceDomain=*.new.example&redirectFromDomain",
                "old.example",
                "redirectFromDomain",
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_methods_exclusions_default_backend_and_route_order() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let app = Echo::start("app").await;
    let fallback = Echo::start("fallback").await;
    let first = Echo::start("first").await;

    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=app&servers={}&servicePath=/app&timeoutServer=1&allowedMethods=GET,POST,DELETE&deniedMethods=DELETE&servicePathExclude=/app/private",
            app.addr
        ),
    )
    .await;
    assert_ok(status, &answer);

    // timeoutServer: a server slower than 1 s is answered 504 by the proxy after about 1 s.
    let started = Instant::now();
    let (status, _) = get(&proxy, "/app/slow").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    assert_eq!(
        send(&proxy, Method::GET, "/app/x", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&proxy, Method::POST, "/app/x", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&proxy, Method::PUT, "/app/x", &[]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&proxy, Method::DELETE, "/app/x", &[]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&proxy, "/app/private/x").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // isDefaultBackend: what no route takes goes there (the excluded path too).
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=fallback&servers={}&servicePath=/fallback&isDefaultBackend=true",
            fallback.addr
        ),
    )
    .await;
    assert_ok(status, &answer);
    assert_eq!(served_by(&get(&proxy, "/nowhere").await.1), "fallback");
    assert_eq!(
        served_by(&get(&proxy, "/app/private/x").await.1),
        "fallback"
    );
    assert_eq!(served_by(&get(&proxy, "/app/x").await.1), "app");
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=other&servers={}&servicePath=/other&isDefaultBackend=true",
            first.addr
        ),
    )
    .await;
    assert_refused(status, &answer, "isDefaultBackend");

    // aclName: a route with one comes before the more specific /app route.
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=first&servers={}&servicePath=/a&aclName=00-first",
            first.addr
        ),
    )
    .await;
    assert_ok(status, &answer);
    assert_eq!(served_by(&get(&proxy, "/app/x").await.1), "first");

    // remove with aclName: only with the route's own.
    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/remove?serviceName=first&aclName=99-other")
        .await;
    assert_refused(status, &answer, "aclName");
    assert_eq!(served_by(&get(&proxy, "/app/x").await.1), "first");
    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/remove?serviceName=first&aclName=00-first")
        .await;
    assert_ok(status, &answer);
    assert_eq!(served_by(&get(&proxy, "/app/x").await.1), "app");

    let base = format!("serviceName=bad&servers={}&servicePath=/bad", app.addr);
    assert_each_refused(
        &proxy,
        &base,
        &[
            ("timeoutServer", "0", ""),
            ("timeoutServer", "1s", ""),
            ("timeoutTunnel", "99999999", ""),
            ("allowedMethods", "GET POST", ""),
            ("deniedMethods", "G#T", ""),
            ("aclName", "a b", ""),
            ("isDefaultBackend", "1", ""),
            ("servicePathExclude", "/a\nb", "servicePath"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_destinations_get_a_frontend_of_their_own() {
    let state = tempfile::tempdir().unwrap();
    let mut proxy = TestProxy::start(state.path()).await;
    let (echo, _echo_task) = tcp_echo().await;
    let web = Echo::start("web").await;
    let src_port = free_addr().port();

    // A service with an HTTP destination and a TCP one on its own port; the TCP connection
    // idle for longer than timeoutTunnel is closed by the proxy.
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=cache&servers={echo}&servicePath=/cache&port={}&reqMode.1=tcp&srcPort.1={src_port}&timeoutTunnel.1=1",
            web.addr.port(),
        ),
    )
    .await;
    assert_ok(status, &answer);
    assert_eq!(served_by(&get(&proxy, "/cache").await.1), "web");

    let tcp_address = SocketAddr::new(proxy.bind.ip(), src_port);
    let mut stream = TcpStream::connect(tcp_address).await.unwrap();
    stream.write_all(b"ping\n").await.unwrap();
    let mut buffer = [0u8; 5];
    stream.read_exact(&mut buffer).await.unwrap();
    assert_eq!(&buffer, b"ping\n");
    let idle = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("the idle TCP connection is closed");
    assert_eq!(closed.unwrap_or(0), 0);
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "{:?}",
        idle.elapsed()
    );

    // Bad input: each 400 naming the problem.
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=redis&servers={echo}&reqMode=tcp&srcPort={src_port}"),
    )
    .await;
    assert_refused(status, &answer, "already taken by cache");
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=redis&servers={echo}&reqMode=tcp&srcPort={}",
            proxy.bind.port()
        ),
    )
    .await;
    assert_refused(status, &answer, "srcPort");
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=redis&servers={echo}&reqMode=tcp&srcPort=7000&servicePath=/x"),
    )
    .await;
    assert_refused(status, &answer, "servicePath");
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=redis&servers={echo}&reqMode=tcp"),
    )
    .await;
    assert_refused(status, &answer, "srcPort");
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=redis&servers={echo}&reqMode=sni&srcPort=7000"),
    )
    .await;
    assert_refused(status, &answer, "reqMode");
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=redis&servers={echo}&reqMode=tcp&srcPort=7000&users=a:b"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // A TCP-only service, and the frontend restored after a restart.
    let other_port = free_addr().port();
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=redis&servers={echo}&reqMode=tcp&srcPort={other_port}"),
    )
    .await;
    assert_ok(status, &answer);
    proxy.stop().await;
    let proxy = TestProxy::start_with(config(state.path(), proxy.bind)).await;
    let mut stream = TcpStream::connect(SocketAddr::new(proxy.bind.ip(), other_port))
        .await
        .unwrap();
    stream.write_all(b"pong\n").await.unwrap();
    stream.read_exact(&mut buffer).await.unwrap();
    assert_eq!(&buffer, b"pong\n");

    // Removing the service frees its port.
    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/remove?serviceName=redis")
        .await;
    assert_ok(status, &answer);
    // The previous worker stops listening as the new one starts.
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(SocketAddr::new(proxy.bind.ip(), other_port))
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the port of the removed service still listens"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The route as a release states it: the service's first destination on `/app`, green.
fn release_route() -> Route {
    Route {
        service: ServiceName::new("app").unwrap(),
        color: Some(Color::Green),
        paths: vec!["/app".into()],
        domain: None,
        path_type: PathType::Prefix,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_keeps_what_the_operator_configured_and_a_plain_reconfigure_replaces_it() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    // The blue instance on 127.0.0.1 (a web and an admin port), the green one on 127.0.0.2.
    let web = Echo::start("web-blue").await;
    let admin = Echo::start("admin-blue").await;
    let (web_port, admin_port) = (web.addr.port(), admin.addr.port());
    let _web_green = Echo::start_on("web-green", &format!("127.0.0.2:{web_port}")).await;
    let _admin_green = Echo::start_on("admin-green", &format!("127.0.0.2:{admin_port}")).await;

    // The operator protects the service, adds a header and an admin destination by hand.
    let password = "0per4tor-pw";
    let (status, answer) = reconfigure(
        &proxy,
        &format!(
            "serviceName=app&serviceColor=blue&servers=127.0.0.1:{web_port}&servicePath=/app&users={}&addReqHeader={}&servicePath.1=/admin&port.1={admin_port}",
            enc(&format!("alice:{password}")),
            enc("X-Team shop"),
        ),
    )
    .await;
    assert_ok(status, &answer);
    let alice = basic("alice", password);
    let (status, _, body) = send(&proxy, Method::GET, "/app", &[("Authorization", &alice)]).await;
    assert_eq!((status, served_by(&body)), (StatusCode::OK, "web-blue"));

    // The routes show what a release keeps, passwords redacted.
    let (status, text, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
    assert_eq!(status, StatusCode::OK, "{routes}");
    assert!(
        !text.contains(password),
        "the routes show a password: {text}"
    );
    let app = &routes["Routes"][0];
    assert_eq!(app["Options"]["users"][0]["name"], "alice", "{app}");
    assert_eq!(
        app["Options"]["users"][0]["password"], "<redacted>",
        "{app}"
    );
    assert_eq!(
        app["Options"]["request_headers"][0]["name"], "X-Team",
        "{app}"
    );
    assert_eq!(app["Destinations"][1]["paths"][0], "/admin", "{app}");
    assert_eq!(app["Destinations"][1]["port"], admin_port, "{app}");

    // A release switches to green as docker-flow does, through the Proxy port.
    let release = HttpProxy::new("127.0.0.1", proxy.api.port(), None);
    let green: SocketAddr = format!("127.0.0.2:{web_port}").parse().unwrap();
    release
        .reconfigure(&release_route(), &[green])
        .await
        .unwrap();
    let (status, _, _) = send(&proxy, Method::GET, "/app", &[]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the release opened the service"
    );
    let (status, _, body) = send(&proxy, Method::GET, "/app", &[("Authorization", &alice)]).await;
    assert_eq!(
        (status, served_by(&body)),
        (StatusCode::OK, "web-green"),
        "{body}"
    );
    assert!(
        body.contains("x-team: shop"),
        "the header was dropped: {body}"
    );
    let (status, _, body) = send(&proxy, Method::GET, "/admin", &[("Authorization", &alice)]).await;
    assert_eq!(
        (status, served_by(&body)),
        (StatusCode::OK, "admin-green"),
        "{body}"
    );
    assert_eq!(
        send(&proxy, Method::GET, "/admin", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );

    // With keepRouteOptions, a setting is either kept or given, never both: 400, nothing
    // changes.
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=app&servers=127.0.0.1:{web_port}&servicePath=/app&keepRouteOptions=true&users=eve:x"),
    )
    .await;
    assert_refused(status, &answer, "users");
    let (status, _, body) = send(&proxy, Method::GET, "/app", &[("Authorization", &alice)]).await;
    assert_eq!(
        (status, served_by(&body)),
        (StatusCode::OK, "web-green"),
        "{body}"
    );

    // A service without a route yet: the release's reconfigure is a plain one.
    let fresh = Route {
        service: ServiceName::new("fresh").unwrap(),
        paths: vec!["/fresh".into()],
        ..release_route()
    };
    release.reconfigure(&fresh, &[green]).await.unwrap();
    let (status, body) = get(&proxy, "/fresh").await;
    assert_eq!(
        (status, served_by(&body)),
        (StatusCode::OK, "web-green"),
        "{body}"
    );

    // A plain 1.x reconfigure replaces the whole route: no users, no header, no admin
    // destination.
    let (status, answer) = reconfigure(
        &proxy,
        &format!("serviceName=app&servers=127.0.0.2:{web_port}&servicePath=/app"),
    )
    .await;
    assert_ok(status, &answer);
    let (status, body) = get(&proxy, "/app").await;
    assert_eq!(
        (status, served_by(&body)),
        (StatusCode::OK, "web-green"),
        "{body}"
    );
    assert!(!body.contains("x-team"), "{body}");
    assert_ne!(served_by(&get(&proxy, "/admin").await.1), "admin-green");
    drop((web, admin));
}
