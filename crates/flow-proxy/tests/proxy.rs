//! The proxy against a real HAProxy and real loopback backends.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, config, free_addr, Backend, TestProxy};
use flow_core::{Color, PathType, Proxy, ProxyError, Route, ServiceName};
use flow_proxy::HttpProxy;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reach_the_right_backend_by_path_and_domain() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let (shop, blog, docs) = (
        Backend::start("shop").await,
        Backend::start("blog").await,
        Backend::start("docs").await,
    );

    let (status, answer) = proxy
        .reconfigure("shop", "/shop,/cart", &[shop.addr], "&serviceColor=blue")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["Status"], "OK");
    assert_eq!(answer["ServiceName"], "shop");
    assert_eq!(answer["ServiceColor"], "blue");
    assert_eq!(answer["ServicePath"], serde_json::json!(["/shop", "/cart"]));
    let (status, answer) = proxy.reconfigure("blog", "/blog", &[blog.addr], "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = proxy
        .reconfigure("docs", "/", &[docs.addr], "&serviceDomain=docs.example.com")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    assert_eq!(
        proxy.get("/shop/item", None).await,
        (StatusCode::OK, "shop".into())
    );
    assert_eq!(
        proxy.get("/cart", None).await,
        (StatusCode::OK, "shop".into())
    );
    assert_eq!(
        proxy.get("/blog/1", None).await,
        (StatusCode::OK, "blog".into())
    );
    assert_eq!(
        proxy.get("/shop", Some("docs.example.com:8081")).await,
        (StatusCode::OK, "docs".into()),
        "the domain route wins over path-only routes, and the Host port is ignored"
    );
    assert_eq!(
        proxy.get("/anything", Some("DOCS.example.com")).await,
        (StatusCode::OK, "docs".into())
    );
    assert_eq!(
        proxy.get("/anything", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // IPv6 servers, at run time and in the configuration.
    let v6 = [
        Backend::start_on("v6-a", "[::1]:0").await,
        Backend::start_on("v6-b", "[::1]:0").await,
    ];
    let (status, answer) = proxy.reconfigure("six", "/six", &[v6[0].addr], "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        proxy.get("/six", None).await,
        (StatusCode::OK, "v6-a".into())
    );
    let (status, answer) = proxy.reconfigure("six", "/six", &[v6[1].addr], "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        proxy.get("/six", None).await,
        (StatusCode::OK, "v6-b".into())
    );
    assert_eq!(
        proxy
            .api("/v1/docker-flow-proxy/remove?serviceName=six")
            .await
            .0,
        StatusCode::OK
    );

    // skipCheck: servers are not health-checked and count as UP at once.
    let raw = Backend::start("raw").await;
    let (status, answer) = proxy
        .reconfigure("raw", "/raw", &[raw.addr], "&skipCheck=true&pathType=path")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["SkipCheck"], true);
    assert_eq!(
        proxy.get("/raw", None).await,
        (StatusCode::OK, "raw".into())
    );
    assert_eq!(
        proxy.get("/raw/x", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(proxy
        .config_text(state.path())
        .contains(&format!("127.0.0.1:{}\n", raw.addr.port())));

    let (status, content_type, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let routes = routes["Routes"].as_array().unwrap();
    assert_eq!(routes.len(), 4);
    let shop_route = routes.iter().find(|r| r["ServiceName"] == "shop").unwrap();
    assert_eq!(shop_route["ServiceColor"], "blue");
    assert_eq!(shop_route["Servers"][0]["Address"], shop.addr.to_string());
    assert_eq!(shop_route["Servers"][0]["State"], "UP");
}

/// One request of the load: when it started and ended, and what came back.
struct Outcome {
    started: Instant,
    finished: Instant,
    answer: Result<String, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_servers_under_load_fails_no_request() {
    const MAX_REQUESTS: usize = 10_000;
    const CLIENTS: usize = 20;
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let group_a = [Backend::start("a1").await, Backend::start("a2").await];
    let group_b = [Backend::start("b1").await, Backend::start("b2").await];
    let extra = Backend::start("extra").await;
    let addrs = |group: &[Backend; 2]| vec![group[0].addr, group[1].addr];
    let (status, answer) = proxy.reconfigure("web", "/web", &addrs(&group_a), "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for index in 0..CLIENTS {
        let (outcomes, sent, stop) = (outcomes.clone(), sent.clone(), stop.clone());
        let http = client(index % 2 == 0);
        let uri = format!("http://{}/web/x", proxy.bind);
        load.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
            {
                let started = Instant::now();
                let request = Request::get(&uri).body(Empty::new()).unwrap();
                let answer = match http.request(request).await {
                    Ok(response) if response.status().is_success() => {
                        match response.into_body().collect().await {
                            Ok(body) => Ok(String::from_utf8_lossy(&body.to_bytes()).into()),
                            Err(e) => Err(format!("body: {e}")),
                        }
                    }
                    Ok(response) => Err(format!("status {}", response.status())),
                    Err(e) => Err(format!("connection: {e:?}")),
                };
                outcomes.lock().unwrap().push(Outcome {
                    started,
                    finished: Instant::now(),
                    answer,
                });
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }));
    }

    // (called at, returned at, names of the new servers)
    let mut switches = Vec::new();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let target = if round % 2 == 0 { &group_b } else { &group_a };
        let called = Instant::now();
        let (status, answer) = proxy.reconfigure("web", "/web", &addrs(target), "").await;
        assert_eq!(status, StatusCode::OK, "switch {round}: {answer}");
        switches.push((
            called,
            Instant::now(),
            [target[0].name.clone(), target[1].name.clone()],
        ));
        // A new route means reloads (backend first, then its route): they must not fail
        // requests either.
        let (status, answer) = proxy
            .reconfigure(
                &format!("extra{round}"),
                &format!("/extra{round}"),
                &[extra.addr],
                "",
            )
            .await;
        assert_eq!(status, StatusCode::OK, "extra route {round}: {answer}");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap();
    let failures: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| o.answer.as_ref().err())
        .collect();
    println!(
        "{} requests, {} failed, {} switches",
        outcomes.len(),
        failures.len(),
        switches.len()
    );
    assert!(
        outcomes.len() >= 1000,
        "too little load: {}",
        outcomes.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(10)]
    );

    for (index, (called, returned, names)) in switches.iter().enumerate() {
        let next_call = switches.get(index + 1).map(|s| s.0);
        let in_window =
            |o: &&Outcome| o.started >= *returned && next_call.is_none_or(|n| o.finished <= n);
        let stray: Vec<&String> = outcomes
            .iter()
            .filter(in_window)
            .filter_map(|o| o.answer.as_ref().ok())
            .filter(|body| !names.contains(body))
            .collect();
        assert!(
            stray.is_empty(),
            "switch {index}: old servers answered after the switch: {stray:?}"
        );
        let after_call =
            |o: &&Outcome| o.finished >= *called && next_call.is_none_or(|n| o.finished <= n);
        let first_new = outcomes
            .iter()
            .filter(after_call)
            .filter(|o| o.answer.as_ref().is_ok_and(|b| names.contains(b)))
            .map(|o| o.finished)
            .min();
        let last_old = outcomes
            .iter()
            .filter(after_call)
            .filter(|o| o.answer.as_ref().is_ok_and(|b| !names.contains(b)))
            .map(|o| o.finished)
            .max();
        assert!(
            first_new.is_some(),
            "switch {index}: the load ended before it (raise MAX_REQUESTS)"
        );
        println!(
            "switch {index}: reconfigure took {:?}; first new answer after {:?}; last old answer after {:?}",
            returned.duration_since(*called),
            first_new.map(|t| t.duration_since(*called)),
            last_old.map(|t| t.duration_since(*called)),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_comes_up_is_not_up_and_the_old_ones_keep_serving() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let old = Backend::start("old").await;
    let fresh = Backend::start("fresh").await;
    let dead = free_addr();
    let (status, _) = proxy.reconfigure("web", "/", &[old.addr], "").await;
    assert_eq!(status, StatusCode::OK);

    let (status, answer) = proxy.reconfigure("web", "/", &[fresh.addr, dead], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["Status"], "NOK");
    assert_eq!(answer["Error"], "NotUp");
    assert_eq!(
        answer["NotUpServers"],
        serde_json::json!([dead.to_string()])
    );
    assert!(answer["Message"]
        .as_str()
        .unwrap()
        .contains(&dead.to_string()));

    for _ in 0..10 {
        assert_eq!(proxy.get("/", None).await, (StatusCode::OK, "old".into()));
    }
    let (_, _, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
    let servers = routes["Routes"][0]["Servers"].as_array().unwrap();
    assert_eq!(
        servers.len(),
        1,
        "the servers added for the failed switch are gone: {servers:?}"
    );
    assert_eq!(servers[0]["Address"], old.addr.to_string());

    // A new service whose only server never comes UP is not routed at all.
    let (status, answer) = proxy.reconfigure("ghost", "/ghost", &[dead], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    let (_, _, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
    assert_eq!(routes["Routes"].as_array().unwrap().len(), 1);
    assert!(!proxy.config_text(state.path()).contains("ghost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_rejected_and_changes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let web = Backend::start("web").await;
    let (status, _) = proxy.reconfigure("web", "/web", &[web.addr], "").await;
    assert_eq!(status, StatusCode::OK);
    let config_before = proxy.config_text(state.path());
    let routes_before = std::fs::read(state.path().join("routes.json")).unwrap();
    let server = web.addr.to_string();

    let cases = [
        format!("serviceName=web&servicePath=/a%20b&servers={server}"),
        format!("serviceName=web&servicePath=/a%0Abackend%20evil&servers={server}"),
        format!("serviceName=web&servicePath=/a%22&servers={server}"),
        format!("serviceName=web&servicePath=/a%27&servers={server}"),
        format!("serviceName=web&servicePath=/a%23x&servers={server}"),
        format!(
            "serviceName=web&servicePath=/a&serviceDomain=evil.com%0Abind%20:1&servers={server}"
        ),
        format!("serviceName=web&servicePath=/a&serviceDomain=a%20b&servers={server}"),
        format!("serviceName=we%20b&servicePath=/a&servers={server}"),
        format!("serviceName=web%0Abackend&servicePath=/a&servers={server}"),
        format!("serviceName=web&servicePath=/a&pathType=path_sub&servers={server}"),
        format!("serviceName=web&servicePath=/a&serviceColor=red&servers={server}"),
        format!("serviceName=web&servicePath=/a&skipCheck=maybe&servers={server}"),
        "serviceName=web&servicePath=/a&servers=localhost:80".to_string(),
        "serviceName=web&servicePath=/a&servers=127.0.0.1".to_string(),
        "serviceName=web&servicePath=/a&servers=127.0.0.1:80%20check".to_string(),
        format!("servicePath=/a&servers={server}"),
        format!("serviceName=web&servers={server}"),
        "serviceName=web&servicePath=/a".to_string(),
    ];
    for query in &cases {
        let (status, content_type, answer) = proxy
            .api(&format!("/v1/docker-flow-proxy/reconfigure?{query}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        assert_eq!(content_type, "application/json");
        assert_eq!(answer["Status"], "NOK", "{query}");
        assert_eq!(answer["Error"], "BadRequest", "{query}");
        assert!(!answer["Message"].as_str().unwrap().is_empty());
    }
    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/reconfigure?serviceName=web&servicePath=/a")
        .await;
    assert!(
        answer["Message"].as_str().unwrap().contains("--registry"),
        "{status} {answer}"
    );

    assert_eq!(proxy.config_text(state.path()), config_before);
    assert_eq!(
        std::fs::read(state.path().join("routes.json")).unwrap(),
        routes_before
    );
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "web".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regular_expression_haproxy_rejects_is_bad_input_and_never_loaded() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let web = Backend::start("web").await;
    let other = Backend::start("other").await;
    let (status, _) = proxy.reconfigure("web", "/web", &[web.addr], "").await;
    assert_eq!(status, StatusCode::OK);
    let config_before = proxy.config_text(state.path());

    // An unbalanced parenthesis passes our character checks; only HAProxy's regex engine
    // can tell it is invalid: the caller's mistake, so 400 with the engine's reason.
    let (status, answer) = proxy
        .reconfigure("broken", "%5E/(a", &[other.addr], "&pathType=path_reg")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["Error"], "BadRequest");
    let message = answer["Message"].as_str().unwrap();
    assert!(
        message.starts_with("invalid servicePath \"^/(a\"")
            && message.contains("missing closing parenthesis"),
        "{message}"
    );

    assert_eq!(proxy.config_text(state.path()), config_before);
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "web".into())
    );
    let (_, _, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
    assert_eq!(routes["Routes"].as_array().unwrap().len(), 1);

    // The same for a route change of an existing service: its servers stay as they were.
    let (status, _) = proxy
        .reconfigure("web", "%5E/(a", &[other.addr], "&pathType=path_reg")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(proxy.config_text(state.path()), config_before);
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "web".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_restores_every_route_before_traffic() {
    let state = tempfile::tempdir().unwrap();
    let bind = free_addr();
    let shop = Backend::start("shop-green").await;
    let blog = Backend::start("blog").await;
    let mut proxy = TestProxy::start_with(config(state.path(), bind)).await;
    let (status, _) = proxy
        .reconfigure(
            "shop",
            "/shop",
            &[shop.addr],
            "&serviceColor=green&serviceDomain=shop.example",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = proxy
        .reconfigure(
            "blog",
            "%5E/blog/%5B0-9%5D%2B%24",
            &[blog.addr],
            "&pathType=path_reg",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    proxy.stop().await;

    let proxy = TestProxy::start_with(config(state.path(), bind)).await;
    // The very first request after start is routed.
    assert_eq!(
        proxy.get("/shop", Some("shop.example")).await,
        (StatusCode::OK, "shop-green".into())
    );
    assert_eq!(
        proxy.get("/blog/42", None).await,
        (StatusCode::OK, "blog".into())
    );
    assert_eq!(
        proxy.get("/blog/x", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, _, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
    let shop_route = routes["Routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ServiceName"] == "shop")
        .cloned()
        .unwrap();
    assert_eq!(shop_route["ServiceColor"], "green");
    assert_eq!(shop_route["ServiceDomain"], "shop.example");
}

/// Whether the answer is OK and carries a warning naming the route table.
fn ok_with_table_warning(status: StatusCode, answer: &serde_json::Value) -> bool {
    let message = answer["Message"].as_str().unwrap_or_default();
    status == StatusCode::OK
        && answer["Status"] == "OK"
        && message.contains("warning: ")
        && message.contains("routes.json")
        && message.contains("a restarted proxy would restore the routes as they were before")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_haproxy_runs_stands_when_the_route_table_cannot_be_saved() {
    let state = tempfile::tempdir().unwrap();
    let bind = free_addr();
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let extra = Backend::start("extra").await;
    let mut proxy = TestProxy::start_with(config(state.path(), bind)).await;
    let (status, answer) = proxy
        .reconfigure("web", "/web", &[blue.addr], "&serviceColor=blue")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        !answer["Message"].as_str().unwrap().contains("warning"),
        "{answer}"
    );

    // A directory where the temporary file of the next write goes: every write of the
    // route table fails from now on, and the stored table stays the one routing to blue.
    let blocker = state.path().join("routes.json.tmp");
    std::fs::create_dir(&blocker).unwrap();

    // Servers moved at run time (no reload): the switch stands and says what was not saved.
    let (status, answer) = proxy
        .reconfigure("web", "/web", &[green.addr], "&serviceColor=green")
        .await;
    assert!(ok_with_table_warning(status, &answer), "{status}: {answer}");
    for _ in 0..5 {
        assert_eq!(
            proxy.get("/web", None).await,
            (StatusCode::OK, "green".into())
        );
    }
    let (_, _, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
    assert_eq!(routes["Routes"][0]["ServiceColor"], "green", "{routes}");
    assert!(proxy
        .config_text(state.path())
        .contains(&green.addr.to_string()));

    // A new service (two reloads) and a removal (one) stand as well.
    let (status, answer) = proxy
        .reconfigure("extra", "/extra", &[extra.addr], "")
        .await;
    assert!(ok_with_table_warning(status, &answer), "{status}: {answer}");
    assert_eq!(
        proxy.get("/extra", None).await,
        (StatusCode::OK, "extra".into())
    );
    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/remove?serviceName=extra")
        .await;
    assert!(ok_with_table_warning(status, &answer), "{status}: {answer}");
    assert_eq!(
        proxy.get("/extra", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Still serving, and still switching.
    let (status, answer) = proxy
        .reconfigure("web", "/web", &[blue.addr], "&serviceColor=blue")
        .await;
    assert!(ok_with_table_warning(status, &answer), "{status}: {answer}");
    let (status, answer) = proxy
        .reconfigure("web", "/web", &[green.addr], "&serviceColor=green")
        .await;
    assert!(ok_with_table_warning(status, &answer), "{status}: {answer}");
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "green".into())
    );
    proxy.stop().await;

    // As documented, a restart restores the table last saved: web on blue.
    let mut proxy = TestProxy::start_with(config(state.path(), bind)).await;
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "blue".into())
    );

    // Once the table can be written again, the next change saves it, and a restart keeps it.
    std::fs::remove_dir(&blocker).unwrap();
    let (status, answer) = proxy
        .reconfigure("web", "/web", &[green.addr], "&serviceColor=green")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        !answer["Message"].as_str().unwrap().contains("warning"),
        "{answer}"
    );
    proxy.stop().await;
    let proxy = TestProxy::start_with(config(state.path(), bind)).await;
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "green".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_removes_exactly_that_service() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let app = Backend::start("app").await;
    let app2 = Backend::start("app2").await;
    assert_eq!(
        proxy.reconfigure("app", "/app", &[app.addr], "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        proxy.reconfigure("app2", "/app2", &[app2.addr], "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        proxy.get("/app2", None).await,
        (StatusCode::OK, "app2".into())
    );

    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/remove?serviceName=app")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["Status"], "OK");
    assert_eq!(
        proxy.get("/app2", None).await,
        (StatusCode::OK, "app2".into())
    );
    assert_eq!(
        proxy.get("/app", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, _, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
    let names: Vec<&str> = routes["Routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ServiceName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app2"]);

    for unknown in ["app", "ap", "nothing"] {
        let (status, _, answer) = proxy
            .api(&format!(
                "/v1/docker-flow-proxy/remove?serviceName={unknown}"
            ))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}: {answer}");
        assert_eq!(answer["Error"], "UnknownService");
    }
    let (status, _, _) = proxy.api("/v1/docker-flow-proxy/remove").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_required_when_set() {
    let state = tempfile::tempdir().unwrap();
    let mut settings = config(state.path(), free_addr());
    settings.token = Some("s3cret".into());
    let proxy = TestProxy::start_with(settings).await;
    let routes_uri = format!("http://{}/v1/docker-flow-proxy/routes", proxy.api);

    let (status, _, answer) = proxy
        .api_request(Request::get(&routes_uri).body(Empty::new()).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["Error"], "Unauthorized");
    let wrong = Request::get(&routes_uri)
        .header("Authorization", "Bearer s3cre")
        .body(Empty::new())
        .unwrap();
    assert_eq!(proxy.api_request(wrong).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        proxy.api("/v1/docker-flow-proxy/routes").await.0,
        StatusCode::OK
    );

    let web = Backend::start("web").await;
    let route = route("web", &["/"]);
    let without = HttpProxy::new("127.0.0.1", proxy.api.port(), None);
    let error = without.reconfigure(&route, &[web.addr]).await.unwrap_err();
    assert!(
        matches!(&error, ProxyError::Refused { message } if message.contains("Bearer")),
        "{error}"
    );
    let with = HttpProxy::new("127.0.0.1", proxy.api.port(), Some("s3cret".into()));
    with.reconfigure(&route, &[web.addr]).await.unwrap();
    assert_eq!(proxy.get("/", None).await, (StatusCode::OK, "web".into()));
}

#[tokio::test]
async fn a_missing_haproxy_is_a_clear_error() {
    let state = tempfile::tempdir().unwrap();
    let mut settings = config(state.path(), free_addr());
    settings.haproxy = state.path().join("no-haproxy-here");
    let error = flow_proxy::start(settings).await.unwrap_err().to_string();
    assert!(error.contains("Debian package `haproxy`"), "{error}");
    assert!(error.contains("no-haproxy-here"), "{error}");
}

fn route(service: &str, paths: &[&str]) -> Route {
    Route {
        service: ServiceName::new(service).unwrap(),
        color: Some(Color::Blue),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        domain: None,
        path_type: PathType::Prefix,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_adapter_keeps_the_proxy_contract() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let adapter = HttpProxy::new("127.0.0.1", proxy.api.port(), None);
    assert_eq!(
        adapter.to_string(),
        format!("docker-flow proxy at http://127.0.0.1:{}", proxy.api.port())
    );
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let service = ServiceName::new("shop").unwrap();

    // Query values are URL-encoded: `&` and `=` in a path arrive as written.
    let shop = route("shop", &["/shop", "/q&x=1"]);
    adapter.reconfigure(&shop, &[blue.addr]).await.unwrap();
    assert_eq!(
        proxy.get("/shop", None).await,
        (StatusCode::OK, "blue".into())
    );
    assert_eq!(
        proxy.get("/q&x=1/y", None).await,
        (StatusCode::OK, "blue".into())
    );

    // Sessions: a slow request holds one open on the blue server.
    let slow = {
        let uri = format!("http://{}/shop/slow", proxy.bind);
        let http = client(false);
        tokio::spawn(async move {
            let response = http
                .request(Request::get(uri).body(Empty::new()).unwrap())
                .await
                .unwrap();
            String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes())
                .into_owned()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(adapter.sessions(&service, &[blue.addr]).await.unwrap(), 1);
    assert_eq!(
        adapter
            .sessions(&service, &[green.addr, free_addr()])
            .await
            .unwrap(),
        0
    );

    // Switch while the slow request runs: it finishes on blue, which drains.
    adapter.reconfigure(&shop, &[green.addr]).await.unwrap();
    assert_eq!(
        proxy.get("/shop", None).await,
        (StatusCode::OK, "green".into())
    );
    assert_eq!(adapter.sessions(&service, &[blue.addr]).await.unwrap(), 1);
    let (_, _, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
    let servers = routes["Routes"][0]["Servers"].as_array().unwrap().clone();
    let draining = servers
        .iter()
        .find(|s| s["Address"] == blue.addr.to_string())
        .unwrap();
    assert_eq!(draining["State"], "DRAIN");
    assert_eq!(draining["Active"], false);

    // Back to blue while it still drains, then to green again: a draining server is taken
    // back into rotation rather than added twice.
    adapter.reconfigure(&shop, &[blue.addr]).await.unwrap();
    assert_eq!(
        proxy.get("/shop", None).await,
        (StatusCode::OK, "blue".into())
    );
    adapter.reconfigure(&shop, &[green.addr]).await.unwrap();
    assert_eq!(
        proxy.get("/shop", None).await,
        (StatusCode::OK, "green".into())
    );
    assert_eq!(adapter.sessions(&service, &[blue.addr]).await.unwrap(), 1);
    assert_eq!(slow.await.unwrap(), "blue");
    let drained = async {
        loop {
            let (_, _, routes) = proxy.api("/v1/docker-flow-proxy/routes").await;
            let servers = routes["Routes"][0]["Servers"].as_array().unwrap().clone();
            if servers.len() == 1 {
                return servers;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let servers = tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .expect("the drained server is deleted once its session ended");
    assert_eq!(servers[0]["Address"], green.addr.to_string());
    assert_eq!(adapter.sessions(&service, &[blue.addr]).await.unwrap(), 0);

    // NotUp names exactly the servers that are not UP.
    let dead = free_addr();
    match adapter.reconfigure(&shop, &[green.addr, dead]).await {
        Err(ProxyError::NotUp {
            service: s,
            servers,
        }) => {
            assert_eq!(s, service);
            assert_eq!(servers, vec![dead]);
        }
        other => panic!("expected NotUp, got {other:?}"),
    }
    assert_eq!(
        proxy.get("/shop", None).await,
        (StatusCode::OK, "green".into())
    );

    adapter.remove(&service).await.unwrap();
    assert!(matches!(
        adapter.remove(&service).await,
        Err(ProxyError::UnknownService { service: s }) if s == service
    ));
    assert_eq!(adapter.sessions(&service, &[green.addr]).await.unwrap(), 0);

    let bad = route("shop", &["/a b"]);
    assert!(matches!(
        adapter.reconfigure(&bad, &[green.addr]).await,
        Err(ProxyError::Refused { message }) if message.contains("white space")
    ));

    let closed = free_addr();
    let nowhere = HttpProxy::new("127.0.0.1", closed.port(), None);
    match nowhere.remove(&service).await {
        Err(ProxyError::Unreachable { address, .. }) => assert_eq!(address, closed.to_string()),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_servers_the_registered_instances_are_routed() {
    use flow_core::memory::MemoryRegistry;
    use flow_core::{Registration, Registry};

    let state = tempfile::tempdir().unwrap();
    let registry = MemoryRegistry::new();
    let blue = [
        Backend::start("blue-1").await,
        Backend::start("blue-2").await,
    ];
    let plain = Backend::start("plain").await;
    let register = |id: &str, name: &str, backend: &Backend| Registration {
        id: id.to_string(),
        name: name.to_string(),
        address: backend.addr.ip().to_string(),
        port: backend.addr.port(),
        tags: vec![],
        meta: Default::default(),
        check: None,
    };
    registry
        .register(&register("b1", "shop-blue", &blue[0]))
        .await
        .unwrap();
    registry
        .register(&register("b2", "shop-blue", &blue[1]))
        .await
        .unwrap();
    registry
        .register(&register("p1", "docs", &plain))
        .await
        .unwrap();
    let mut settings = config(state.path(), free_addr());
    settings.registry = Some(std::sync::Arc::new(registry));
    let proxy = TestProxy::start_with(settings).await;

    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/reconfigure?serviceName=shop&serviceColor=blue&servicePath=/shop")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut servers: Vec<String> = answer["Servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    servers.sort();
    let mut expected = vec![blue[0].addr.to_string(), blue[1].addr.to_string()];
    expected.sort();
    assert_eq!(servers, expected);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(proxy.get("/shop", None).await.1);
    }
    assert_eq!(seen, ["blue-1".to_string(), "blue-2".to_string()].into());

    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/reconfigure?serviceName=docs&servicePath=/docs")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        proxy.get("/docs", None).await,
        (StatusCode::OK, "plain".into())
    );

    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/reconfigure?serviceName=shop&serviceColor=green&servicePath=/shop")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(
        answer["Message"].as_str().unwrap().contains("shop-green"),
        "{answer}"
    );
    assert_eq!(proxy.get("/shop", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_state_directory_too_long_for_sockets_is_a_clear_error() {
    let state = tempfile::tempdir().unwrap();
    let deep = state.path().join("d".repeat(100));
    let error = flow_proxy::start(config(&deep, free_addr()))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("shorter state directory"), "{error}");
}
